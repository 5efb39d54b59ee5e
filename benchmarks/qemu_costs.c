/* What one aarch64 instruction costs under qemu-aarch64 (TCG): a loop of 8 copies, timed, for
 * the instructions a GEMM is made of; the multiply-adds into 8 different accumulators, as in
 * a register tile (qemu is faster when one accumulator is reused). Built static by
 * benchmarks/arm.py:
 *     aarch64-linux-gnu-gcc -O2 -march=armv8.2-a+dotprod -static qemu_costs.c
 * Prints "name ns_per_instruction lanes" lines. */
#include <stdio.h>
#include <time.h>

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

#define N 1000000L
#define EIGHT(op) op "\n" op "\n" op "\n" op "\n" op "\n" op "\n" op "\n" op "\n"
#define ACC8(a, b) a "0" b "\n" a "1" b "\n" a "2" b "\n" a "3" b "\n" \
                   a "4" b "\n" a "5" b "\n" a "6" b "\n" a "7" b "\n"
#define PROBE(name, lanes, text)                                                    \
  do {                                                                              \
    double t0 = now();                                                              \
    for (long i = 0; i < N; i++)                                                    \
      __asm__ volatile(text ::"r"(buf)                                              \
                       : "v0", "v1", "v2", "v3", "v4", "v5", "v6", "v7", "x9", "memory");   \
    printf("%s %.3f %d\n", name, (now() - t0) / N / 8 * 1e9, lanes);                \
  } while (0)

int main(void) {
  float buf[16];
  for (int i = 0; i < 16; i++) buf[i] = (i % 2 ? 1e-4f : -1e-4f) * (1.0f + i * 1.37e-3f);
  /* normal, inexact operands (qemu's hard-float path needs the inexact flag set) */
  __asm__ volatile("ldr q8, [%0]\n ldr q9, [%0, #16]\n ldr q0, [%0, #32]\n"
                   "mov v1.16b, v0.16b\n mov v2.16b, v0.16b\n mov v3.16b, v0.16b\n"
                   "mov v4.16b, v0.16b\n mov v5.16b, v0.16b\n mov v6.16b, v0.16b\n"
                   "mov v7.16b, v0.16b\n fdiv s10, s8, s9\n" ::"r"(buf)
                   : "v0", "v1", "v2", "v3", "v4", "v5", "v6", "v7", "v8", "v9", "v10");
  PROBE("fmla_4s_by_lane", 4, ACC8("fmla v", ".4s, v8.4s, v9.s[1]"));
  PROBE("fmla_4s", 4, ACC8("fmla v", ".4s, v8.4s, v9.4s"));
  PROBE("fmadd_s", 1, ACC8("fmadd s", ", s8, s9, s0"));
  PROBE("fmul_s", 1, ACC8("fmul s", ", s8, s9"));
  PROBE("fadd_s", 1, ACC8("fadd s", ", s0, s9"));
  PROBE("mla_4s_int32", 4, ACC8("mla v", ".4s, v8.4s, v9.4s"));
  PROBE("sdot_4s", 4, ACC8("sdot v", ".4s, v8.16b, v9.16b"));
  PROBE("ldr_q", 4, EIGHT("ldr q1, [%0]"));
  PROBE("add_x", 1, EIGHT("add x9, x9, #1"));
  return 0;
}
