"""Pooling, normalisation, padding and resizing ops."""
