"""Recurrent ops: LSTM and GRU."""
