"""report.md section 5: custom vs native operator speed (ratios from one interleaved run)."""

from __future__ import annotations

from cnnlab.report import lab_figures as lab
from cnnlab.report.markdown_helpers import table


def _table(rows, name):
    return table(["layer shape", "where", "native ms", f"{name} ms", f"{name} / native",
                  "algorithm"],
                 [[f"`{r['shape'].strip()}`", r["where"], f"{r['native_ms']:.2f}",
                   f"{r['fast_ms']:.2f}", f"**{r['ratio']:.2f}**", r["algorithm"]] for r in rows])


def _reference(ref) -> list[str]:
    if ref is None:
        return ["The lab's loops were not timed (`--quick`).", ""]
    model_ms, orig = ref["model"], lab.ORIGINAL_LENET_FORWARD
    return [
        "**The lab's loops (`impl=\"reference\"`) / native, forward on one image** (what the "
        "lab's speed cell timed), per LeNet layer — geometric mean "
        f"**{ref['geomean']:,.0f}×**:", "",
        _table(ref["rows"], "loops"), "",
        _whole(model_ms, orig), ""]


def _whole(model_ms, orig) -> str:
    return table(["LeNet-5 forward, one 1×32×32 image", "loops", "native", "loops / native"], [
        ["cnnlab (torch, the lab's loops as `reference`)", f"{model_ms['reference_ms']:.1f} ms",
         f"{model_ms['native_ms']:.2f} ms", f"**{model_ms['ratio']:,.0f}×**"],
        ["original Paddle code (measured, reference.md)", f"{orig['custom_s'] * 1e3:,.0f} ms",
         f"{orig['native_s'] * 1e3:.2f} ms", f"**≈{orig['ratio']:,}×**"],
        ["the lab (published)", "interrupted, no figure", "–", "–"]])


def render(phase) -> str:
    conv, pool, ref = phase["conv"], phase["pool"], phase["reference"]
    env = phase.get("environment", {})
    return "\n".join([
        f"Forward + backward (gradients of input, weight and bias), float32, CPU with "
        f"{env.get('threads', '–')} torch threads, batch {phase['batch']}. Each ratio is the median "
        "of interleaved A/B pairs measured in this run (load from other processes hits both "
        "sides alike); a ratio below 1 means ours is faster. `cnnlab.analysis.speed`, also "
        "`benchmarks/ops.py` for the full table.", "",
        f"**Convolutions, fast / native** — geometric mean **{conv['geomean']:.2f}**, worst "
        f"{conv['worst']:.2f}, best {conv['best']:.2f} over {len(conv['rows'])} shapes:", "",
        _table(conv["rows"], "fast"), "",
        f"**Pooling, fast / native** — geometric mean **{pool['geomean']:.2f}**, worst "
        f"{pool['worst']:.2f}:", "",
        _table(pool["rows"], "fast"), "",
        *_reference(ref),
        "The lab's speed cell was interrupted and printed nothing; the original code's ≈3,900× "
        "is reference.md's measurement. Our vectorised operators, written from the same "
        f"formulas, run at {conv['geomean']:.2f}× (conv) and {pool['geomean']:.2f}× (pool) of "
        "torch's kernels (geometric means above).", ""])
