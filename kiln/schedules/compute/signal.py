"""TE compute of signal processing and sampling ops."""
