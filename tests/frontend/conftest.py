"""Frontend test hooks: the ONNX node suite's counts at the end of the session."""

from __future__ import annotations

import pytest

NODE_SUITE = "test_onnx_node_suite.py::OnnxBackendNodeModelTest::"
# a case's outcome, from its reports' categories: a failure in any phase counts as one
_PRECEDENCE = ("failed", "error", "xpassed", "xfailed", "skipped", "passed")


def node_suite_counts(stats: dict[str, list]) -> dict[str, int]:
    """Outcomes of the node suite's cases, one per case, from the terminal reporter's stats."""
    outcome: dict[str, str] = {}
    for key in reversed(_PRECEDENCE):   # later keys override: failed wins
        for report in stats.get(key, []):
            nodeid = getattr(report, "nodeid", "")
            if NODE_SUITE in nodeid:
                outcome[nodeid] = key
    return {key: sum(v == key for v in outcome.values()) for key in _PRECEDENCE}


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """One line: passed / failed as expected / excluded / total and the pass percentage."""
    counts = node_suite_counts(terminalreporter.stats)
    total = sum(counts.values())
    if not total:
        return
    in_scope = total - counts["skipped"]
    unexpected = counts["failed"] + counts["error"] + counts["xpassed"]
    line = (f"onnx node suite: {counts['passed']} passed, {counts['xfailed']} failed as "
            f"expected, {counts['skipped']} excluded, of {total} "
            f"({100 * counts['passed'] / total:.1f}% pass; "
            f"{100 * counts['passed'] / max(in_scope, 1):.1f}% of the {in_scope} in scope)")
    if unexpected:
        line += f"; {unexpected} not as expected (failed, or passed while listed)"
    terminalreporter.write_sep("-", "onnx node suite")
    terminalreporter.write_line(line)
