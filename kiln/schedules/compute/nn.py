"""TE compute of pooling, normalisation, padding and resizing ops."""
