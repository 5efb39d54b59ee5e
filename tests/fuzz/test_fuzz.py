"""Differential fuzzing: random graphs compiled for x86 against the reference interpreter.

``KILN_FUZZ_EXAMPLES`` graphs in all (default 200, what ``make test`` runs), shared among the
tests below by the weights in ``SHARES``; ``make fuzz N=1000`` runs more. The runs are
derandomized (the same graphs every time, so a failure reproduces) unless ``KILN_FUZZ_SEED``
is set, which draws another sequence. A failing case prints its graph; shrink it, fix kiln,
and keep the small graph in ``test_regressions.py``.
"""

from __future__ import annotations

import os

from fuzz_graphs import Case, check_case, graphs
from hypothesis import HealthCheck, given, note, seed, settings

TOTAL = int(os.environ.get("KILN_FUZZ_EXAMPLES", "200"))
SEED = os.environ.get("KILN_FUZZ_SEED")

# each test's share of the examples (they add up to 1)
SHARES = {"elementwise": 0.2, "reduce": 0.15, "gemm": 0.15, "movement": 0.15, "conv": 0.1,
          "mixed": 0.25}


def fuzz_settings(share: str):  # noqa: ANN201 - a hypothesis settings decorator
    """Deterministic settings for a test taking ``SHARES[share]`` of ``TOTAL`` examples."""
    return settings(max_examples=max(1, round(TOTAL * SHARES[share])), deadline=None,
                    derandomize=SEED is None, database=None, print_blob=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much])


def _check(case: Case) -> None:
    note(repr(case))
    check_case(case)


def _seeded(fn):  # noqa: ANN001, ANN202 - a test function in, the same one out
    """``fn`` under ``KILN_FUZZ_SEED`` when that is set."""
    return seed(int(SEED))(fn) if SEED is not None else fn


@_seeded
@fuzz_settings("elementwise")
@given(graphs(["unary", "unary", "binary", "binary", "compare", "cast"]))
def test_elementwise(case: Case) -> None:
    """Unary and broadcasting binary ops, comparisons and where, casts."""
    _check(case)


@_seeded
@fuzz_settings("reduce")
@given(graphs(["reduce", "reduce", "norm", "norm", "unary", "binary"]))
def test_reductions(case: Case) -> None:
    """Reductions, softmax and the norms with elementwise prologues and epilogues."""
    _check(case)


@_seeded
@fuzz_settings("gemm")
@given(graphs(["gemm", "gemm", "binary", "unary", "norm", "movement"]))
def test_gemm(case: Case) -> None:
    """matmul and dense with constant and runtime weights, and their epilogues."""
    _check(case)


@_seeded
@fuzz_settings("movement")
@given(graphs(["movement", "movement", "movement", "unary", "binary", "reduce"]))
def test_movement(case: Case) -> None:
    """transpose, reshape, concat, slice, gather, broadcast_to and split in chains."""
    _check(case)


@_seeded
@fuzz_settings("conv")
@given(graphs(["conv", "conv", "binary", "unary", "reduce"]))
def test_conv(case: Case) -> None:
    """conv2d and pooling on small NCHW shapes, with epilogues."""
    _check(case)


@_seeded
@fuzz_settings("mixed")
@given(graphs())
def test_mixed(case: Case) -> None:
    """Every family at once."""
    _check(case)
