"""Signal processing, sampling grids and other less common ops."""
