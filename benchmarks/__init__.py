"""kiln's benchmarks: ``python -m benchmarks.cpu`` for the whole table against NumPy and ONNX
Runtime; ``benchmarks/gemm.py``, ``encoder.py`` and ``models.py`` for one part each. Timing
helpers shared by all of them live in ``benchmarks.timing``."""
