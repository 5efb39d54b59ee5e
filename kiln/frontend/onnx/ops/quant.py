"""Quantized ops: QuantizeLinear, DequantizeLinear, integer GEMM and convolution."""
