"""A ``Report`` as one self-contained HTML file: the fused graph (Graphviz SVG), the kernel
table, the roofline (matplotlib SVG) and compile statistics, with each kernel's TIR and
assembly shown on a click, all inline (no network, no files beside it)."""

from __future__ import annotations

import html
import io
import json
import shutil
import subprocess
from pathlib import Path

from kiln.errors import KilnError
from kiln.report.build import Report

# a colour per schedule template, for the graph and the chart
COLOURS = {"gemm": "#4e79a7", "int8 dot gemm": "#2f4b7c", "conv2d": "#8e6bb8",
           "attention": "#e15759", "row reduction": "#59a14f", "generic reduction": "#8cd17d",
           "pool": "#b07aa1", "injective": "#bab0ac", "recurrence": "#f28e2b",
           "cuda gemm": "#4e79a7", "tensor-core gemm": "#2f4b7c", "wgmma gemm": "#1d3557",
           "flash attention": "#e15759"}
OTHER = "#d3d3d3"


def write_html(report: Report, path: str | Path) -> Path:
    """Write ``report`` to ``path`` as one HTML file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(report), encoding="utf-8")
    return path


def render(report: Report) -> str:
    """The report as one HTML document."""
    c = report.compilation
    details = {r.name: {"tir": r.tir, "code": r.code, "template": r.template,
                        "knobs": r.knobs} for r in report.rows}
    data = json.dumps(details).replace("</", "<\\/")      # no "</script>" inside the script
    title = f"kiln report: {report.model} on {report.target.name}"
    return _PAGE.format(
        title=html.escape(title),
        machine=html.escape(report.machine),
        summary=_summary(report),
        graph=graph_svg(report),
        legend=_legend(report),
        table=_table(report),
        roofline=roofline_svg(report) if report.peaks else
        "<p class='note'>no roofline: the kernels did not run here</p>",
        stats=_stats(report),
        notes="".join(f"<p class='note'>{html.escape(n)}</p>" for n in report.notes),
        kernels=len(c.kernels),
        data=data,
    )


# -- the graph ----------------------------------------------------------------------------------
def graph_dot(report: Report) -> str:
    """The fused graph in Graphviz's language: a box per group (coloured by template), an
    ellipse per graph input and output, an edge per value passed between them."""
    c = report.compilation
    rows = {r.name: r for r in report.rows}
    made_by: dict[int, str] = {}
    lines = ["digraph kiln {", '  graph [rankdir=TB, nodesep=0.25, ranksep=0.3, bgcolor="white"];',
             '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=10];',
             '  edge [color="#888888", arrowsize=0.6];']
    for v in c.optimized.inputs:
        made_by[id(v)] = f"in:{v.name}"
        lines.append(f'  "in:{_q(v.name)}" [label="{_q(v.name)}\\n{_q(str(v.type))}", '
                     'shape=ellipse, fillcolor="#ffffff"];')
    for g in c.fused.groups:
        row = rows[g.name]
        time = ("" if row.ms is None else f"\\n{row.ms * 1e3:.3g} us" if row.calls
                else "\\n(a view: no call)")
        lines.append(f'  "{_q(g.name)}" [id="group-{_q(g.name)}", label="{_q(g.name)}\\n'
                     f'{_q(row.template)}{time}", fillcolor="{COLOURS.get(row.template, OTHER)}",'
                     f' fontcolor="{_ink(row.template)}", tooltip="{_q(g.name)}"];')
        for v in g.outputs:
            made_by[id(v)] = g.name
    edges = set()
    for g in c.fused.groups:
        for v in g.inputs:
            src = made_by.get(id(v))
            if src is not None and (src, g.name) not in edges:
                edges.add((src, g.name))
                lines.append(f'  "{_q(src)}" -> "{_q(g.name)}";')
    for v in c.optimized.outputs:
        lines.append(f'  "out:{_q(v.name)}" [label="{_q(v.name)}\\n{_q(str(v.type))}", '
                     'shape=ellipse, fillcolor="#ffffff"];')
        if id(v) in made_by:
            lines.append(f'  "{_q(made_by[id(v)])}" -> "out:{_q(v.name)}";')
    return "\n".join([*lines, "}"])


def require_dot() -> str:
    """The path of Graphviz's ``dot``, or a clear error where it is missing."""
    dot = shutil.which("dot")
    if dot is None:
        raise KilnError("kiln report draws the graph with Graphviz's dot, which is not "
                        "installed (Debian/Ubuntu: apt-get install graphviz)")
    return dot


def graph_svg(report: Report) -> str:
    svg = subprocess.run([require_dot(), "-Tsvg"], input=graph_dot(report), capture_output=True,
                         text=True, check=True, timeout=300).stdout
    return svg[svg.index("<svg"):]                 # without the XML prologue and doctype


def _q(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _ink(template: str) -> str:
    return "#ffffff" if template in ("gemm", "int8 dot gemm", "conv2d", "attention",
                                     "cuda gemm", "tensor-core gemm", "wgmma gemm",
                                     "flash attention") else "#000000"


def _legend(report: Report) -> str:
    used = sorted({r.template for r in report.rows})
    return "".join(f"<span class='swatch' style='background:{COLOURS.get(t, OTHER)}'></span>"
                   f"{html.escape(t or 'other')} " for t in used)


# -- the roofline -------------------------------------------------------------------------------
def roofline_svg(report: Report) -> str:
    """Achieved GFLOP/s against FLOPs per byte for each profiled kernel with arithmetic,
    under the roofs measured in the same run; the five costliest kernels labelled."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    peaks = report.peaks
    rows = [r for r in report.rows if r.ms and r.flops and r.bytes]
    fig, ax = plt.subplots(figsize=(7.5, 4.6), dpi=100)
    xs = [r.intensity for r in rows]
    lo = min([*xs, 0.05]) / 2
    hi = max([*xs, 2 * peaks.gflops / peaks.gbps]) * 2
    for gbps, style, what in ((peaks.cache_gbps, "-", "L2"), (peaks.gbps, "--", "memory")):
        ridge = peaks.gflops / gbps
        ax.plot([lo, ridge, hi], [lo * gbps, peaks.gflops, peaks.gflops], style,
                color="black", linewidth=1.2,
                label=f"{what}: {gbps:.0f} GB/s, {peaks.gflops:.0f} GFLOP/s")
    total = sum(r.ms * r.calls for r in rows) or 1.0
    for template in sorted({r.template for r in rows}):
        sel = [r for r in rows if r.template == template]
        ax.scatter([r.intensity for r in sel], [r.gflops for r in sel],
                   s=[20 + 600 * r.ms * r.calls / total for r in sel],
                   color=COLOURS.get(template, OTHER), alpha=0.85, edgecolors="black",
                   linewidths=0.5, label=template)
    for r in sorted(rows, key=lambda r: -r.ms * r.calls)[:5]:
        ax.annotate(r.name, (r.intensity, r.gflops), fontsize=7, xytext=(4, 4),
                    textcoords="offset points")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lo, hi)
    ax.set_xlabel("arithmetic intensity (FLOPs per byte moved, at least)")
    ax.set_ylabel("GFLOP/s")
    ax.set_title(f"roofline, {peaks.threads} thread(s); marker area: share of the time",
                 fontsize=10)
    ax.grid(True, which="both", linewidth=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    buf = io.StringIO()
    fig.savefig(buf, format="svg")
    plt.close(fig)
    svg = buf.getvalue()
    return svg[svg.index("<svg"):]


# -- the table and the statistics ---------------------------------------------------------------
def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _table(report: Report) -> str:
    total = sum((r.ms or 0) * r.calls for r in report.rows) or None
    head = ("<tr><th>kernel</th><th>template</th><th>calls</th><th>time (us)</th>"
            "<th>share</th><th>MFLOP</th><th>KiB moved</th><th>FLOP/byte</th>"
            "<th>GFLOP/s</th><th>GB/s</th><th>% of roofline</th></tr>")
    body = []
    for r in report.rows:
        share = report.bound_share(r)
        pct = None if total is None or r.ms is None else 100 * r.ms * r.calls / total
        body.append(
            f"<tr class='kernel' data-kernel='{html.escape(r.name)}'>"
            f"<td><a href='#' onclick=\"show('{html.escape(r.name)}'); return false;\">"
            f"{html.escape(r.name)}</a></td><td>{html.escape(r.template)}</td>"
            f"<td>{r.calls}</td><td>{_fmt(r.ms and r.ms * 1e3, '.2f')}</td>"
            f"<td>{_fmt(pct, '.1f')}%</td><td>{r.flops / 1e6:.3f}</td>"
            f"<td>{r.bytes / 1024:.1f}</td><td>{r.intensity:.2f}</td>"
            f"<td>{_fmt(r.gflops, '.1f')}</td><td>{_fmt(r.gbps, '.1f')}</td>"
            f"<td>{_fmt(share and 100 * share, '.0f')}</td></tr>")
    return f"<table id='kernels'>{head}{''.join(body)}</table>"


def _summary(report: Report) -> str:
    parts = [f"{len(report.rows)} kernels"]
    if report.latency_ms is not None:
        parts.append(f"model latency {report.latency_ms:.4g} ms (median)")
        parts.append(f"sum of kernels {sum(r.ms * r.calls for r in report.rows):.4g} ms")
    if report.peaks is not None:
        p = report.peaks
        parts.append(f"peaks measured in this run: {p.gflops:.0f} GFLOP/s fp32, "
                     f"{p.cache_gbps:.0f} GB/s from L2, {p.gbps:.1f} GB/s from memory, "
                     f"on {p.threads} thread(s)")
    return html.escape("; ".join(parts))


def _stats(report: Report) -> str:
    rows = "".join(f"<tr><td>{html.escape(stage)}</td><td>{seconds:.3f}</td></tr>"
                   for stage, seconds in report.seconds.items())
    size = "-" if report.library_bytes is None else f"{report.library_bytes / 1024:.0f} KiB"
    return (f"<table id='stats'><tr><th>compile stage</th><th>seconds</th></tr>{rows}"
            f"<tr><td><b>total</b></td><td><b>{sum(report.seconds.values()):.3f}</b></td></tr>"
            f"</table><p>kernels: {len(report.rows)}; library size: {size}</p>")


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: Helvetica, Arial, sans-serif; margin: 1.5em; color: #222; }}
h1 {{ font-size: 1.4em; margin-bottom: 0.2em; }} h2 {{ font-size: 1.15em; margin-top: 1.5em; }}
.note, .sub {{ color: #666; font-size: 0.9em; }}
#layout {{ display: flex; gap: 1.5em; align-items: flex-start; }}
#graph {{ flex: 0 0 auto; max-width: 48%; max-height: 80vh; overflow: auto;
          border: 1px solid #ddd; }}
#graph svg {{ max-width: 100%; height: auto; }}
#graph g.node {{ cursor: pointer; }}
#details {{ flex: 1 1 auto; min-width: 0; }}
pre {{ background: #f6f8fa; border: 1px solid #ddd; padding: 0.6em; max-height: 32em;
       overflow: auto; font-size: 0.78em; }}
table {{ border-collapse: collapse; font-size: 0.85em; }}
th, td {{ border: 1px solid #ddd; padding: 0.2em 0.5em; text-align: right; }}
th {{ background: #f0f0f0; }} td:first-child, td:nth-child(2) {{ text-align: left; }}
tr.selected {{ background: #fff3c4; }}
.swatch {{ display: inline-block; width: 0.9em; height: 0.9em; margin: 0 0.3em 0 0.8em;
           vertical-align: middle; border: 1px solid #999; }}
</style></head>
<body>
<h1>{title}</h1>
<p class="sub">{machine}</p>
<p id="summary">{summary}</p>
{notes}
<h2>Fused graph</h2>
<p class="sub">{kernels} kernels. Colour: the schedule template. Click a group for its TIR and
assembly.</p><p>{legend}</p>
<div id="layout">
<div id="graph">{graph}</div>
<div id="details"><p class="note">Click a group in the graph or a kernel in the table.</p></div>
</div>
<h2>Kernels</h2>
<p class="sub">Time: each kernel alone on the arguments it gets in a run (median). FLOPs as
the kernel executes them, from its TIR before scheduling (a GEMM's padding to whole register
tiles included); bytes: its inputs read once and its outputs written once.
% of roofline: achieved GFLOP/s over min(peak, intensity x L2 bandwidth), the roof for data
that stays in cache, as one run's working sets mostly do; GB/s over L2 bandwidth for kernels
without arithmetic.</p>
{table}
<h2>Roofline</h2>
<div id="roofline">{roofline}</div>
<h2>Compile statistics</h2>
{stats}
<script type="application/json" id="kernel-data">{data}</script>
<script>
"use strict";
const KERNELS = JSON.parse(document.getElementById("kernel-data").textContent);
function el(tag, text) {{ const e = document.createElement(tag); e.textContent = text; return e; }}
function show(name) {{
  const k = KERNELS[name];
  if (!k) return;
  const box = document.getElementById("details");
  box.replaceChildren(el("h3", name),
    el("p", k.template + (k.knobs ? ": " + k.knobs : "")),
    el("h4", "scheduled TIR"), el("pre", k.tir),
    el("h4", "assembly"), el("pre", k.code || "(none)"));
  box.querySelectorAll("pre")[0].id = "tir";
  document.querySelectorAll("tr.kernel").forEach(
    r => r.classList.toggle("selected", r.dataset.kernel === name));
}}
document.querySelectorAll("#graph g.node").forEach(g => {{
  const name = g.querySelector("title").textContent;
  if (KERNELS[name]) g.addEventListener("click", () => show(name));
}});
</script>
</body></html>
"""

