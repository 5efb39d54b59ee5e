"""TE compute of int8 quantization ops: quantize, dequantize, integer GEMM and convolution."""
