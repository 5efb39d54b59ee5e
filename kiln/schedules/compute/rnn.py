"""TE compute of recurrent ops: LSTM and GRU."""
