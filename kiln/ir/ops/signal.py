"""Signal processing and sampling ops: DFT, grid sampling."""
