"""The x86 template for elementwise / broadcast / injective groups."""

from __future__ import annotations

from tvm import s_tir

from kiln.schedules.x86.common import inline_pointwise, output_blocks, schedule_pointwise


def schedule_injective(sch: s_tir.Schedule, lanes: int) -> None:
    """Inline the whole chain into its output blocks (nothing intermediate touches memory),
    then give each output the vectorised, parallel pointwise loop nest."""
    inline_pointwise(sch)
    for b in output_blocks(sch):
        schedule_pointwise(sch, b, lanes)
