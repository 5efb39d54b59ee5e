"""Transformer ops of opsets 23-24 (Attention, RotaryEmbedding, RMSNormalization, ...), lowered
onto kiln ops."""
