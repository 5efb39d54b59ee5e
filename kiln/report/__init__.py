"""``kiln report``: one self-contained HTML file on what kiln made of a model.

    report = kiln.report.build_report("bert.onnx", "x86", {"input_ids": (1, 128)})
    kiln.report.write_html(report, "bert.html")

It holds the fused graph (drawn by Graphviz, groups coloured by template; a click shows a
group's TIR and assembly), a per-kernel table (time profiled here, FLOPs, bytes moved, GFLOP/s,
GB/s, share of the roofline's bound), a roofline chart (matplotlib) against the peaks measured
in the same run, and compile statistics (time per stage, kernels, library size).
"""

from kiln.report.build import KernelRow, Report, build_report
from kiln.report.html import write_html

__all__ = ["KernelRow", "Report", "build_report", "write_html"]
