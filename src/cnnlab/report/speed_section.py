"""report.md section 5: custom vs native operator speed (ratios from one interleaved run)."""

from __future__ import annotations

from cnnlab.report import lab_figures as lab


def render(p) -> str:
    return f"(speed table pending)\n"
