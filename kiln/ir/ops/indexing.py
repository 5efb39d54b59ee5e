"""Index-driven ops: gather/scatter variants, top-k, arg-reductions, cumulative sums, one-hot."""
