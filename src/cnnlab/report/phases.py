"""The non-training phases of `cnnlab reproduce` (lab part 1, sections 5.1-5.4.1).

Each `phase_*(ctx)` returns a JSON-ready dict that goes into results.json under the phase's key
and is rendered by `cnnlab.report.markdown`. `ctx` is the `reproduce.Context` (options, output
folder, the data loaded once).
"""

from __future__ import annotations

import torch

from cnnlab import ops
from cnnlab.report import lab_figures as lab

IMPLS_SHOWN = ("reference", "fast")


# ---------------------------------------------------------------- 1. operators (5.1-5.2)

def _worked_examples() -> list[dict]:
    """The lab's printed operator examples, computed by our reference and fast operators."""
    gen = torch.Generator().manual_seed(0)
    x1 = torch.arange(1.0, 10.0).reshape(1, 3, 3)                    # the lab's [1,3,3] input
    k1 = torch.tensor([[0.0, 1.0], [2.0, 3.0]])
    x2 = torch.tensor([[[[0.0, 1, 2], [3, 4, 5], [6, 7, 8]],
                        [[1.0, 2, 3], [4, 5, 6], [7, 8, 9]]]])           # [1,2,3,3]
    w2, b2 = torch.ones(3, 2, 2, 2), torch.zeros(3)
    x3 = torch.randn(2, 8, 8, generator=gen)
    k3 = torch.randn(3, 3, generator=gen)
    x4 = torch.arange(1.0, 17.0).reshape(1, 1, 4, 4)

    def compute(impl):
        return {
            "conv_2x2": ops.conv2d(x1, k1, impl=impl)[0].tolist(),
            "conv_multichannel": ops.conv2d(x2, w2, b2, impl=impl)[0].tolist(),
            "conv_shapes": {
                "stride1": list(ops.conv2d(x3, k3, stride=1, padding=1, impl=impl).shape),
                "stride2": list(ops.conv2d(x3, k3, stride=2, padding=1, impl=impl).shape),
            },
            "maxpool": ops.pool2d(x4, 2, 2, mode="max", impl=impl)[0, 0].tolist(),
            "avgpool": ops.pool2d(x4, 2, 2, mode="avg", impl=impl)[0, 0].tolist(),
        }

    ours = {impl: compute(impl) for impl in IMPLS_SHOWN}
    rows = []
    for key, spec in lab.WORKED_EXAMPLES.items():
        row = {"key": key, "what": spec["what"], "lab": spec["lab"]}
        for impl in IMPLS_SHOWN:
            row[impl] = ours[impl][key]
        row["match"] = all(_close(row[impl], spec["lab"]) for impl in IMPLS_SHOWN)
        rows.append(row)
    return rows


def _close(a, b, tol=1e-5) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k], tol) for k in a)
    return torch.allclose(torch.tensor(a, dtype=torch.float64),
                          torch.tensor(b, dtype=torch.float64), atol=tol, rtol=0)


def _normalise_checks(checks) -> list[dict]:
    out = []
    for c in checks:
        c = c if isinstance(c, dict) else vars(c)
        out.append({k: c.get(k) for k in ("name", "max_abs_diff", "tolerance", "passed")}
                   | ({"error": c["error"]} if c.get("error") else {}))
    return out


def phase_ops(ctx) -> dict:
    from cnnlab.ops.selfcheck import run_op_checks

    checks = _normalise_checks(run_op_checks(quick=ctx.options.quick))
    return {"examples": _worked_examples(), "checks": checks,
            "all_passed": all(c["passed"] for c in checks)}


# ------------------------------------------------------------------- 2. edges (5.1.7)

def phase_edges(ctx) -> dict:
    """The lab's Laplacian edge figure on a bundled digit (test image 1; the lab used its own
    number.jpg), resized to 256x256 as the lab did: the same figure as `cnnlab edges`."""
    from cnnlab.ops.edges import edge_images
    from cnnlab.report.figures import save_edges_figure

    img, out = edge_images(ctx.data.test.raw[1].numpy(), size=256, impl="fast")
    save_edges_figure(img, out, ctx.out / "edges.png")
    return {"image": "edges.png", "digit_label": int(ctx.data.test.labels[1]),
            "input_shape": list(img.shape), "output_shape": list(out.shape),
            "output_range": [float(out.min()), float(out.max())]}


# ---------------------------------------------------------------- 3. LeNet shape walk (5.3.1)

def phase_shape_walk(ctx) -> dict:
    """Feed one [1,1,32,32] input through LeNet's seven layers, as the lab's loop over
    `model.sublayers()` does (flattening before the first linear layer)."""
    from cnnlab.models import build_model

    model = build_model("lenet", conv_impl="fast")
    x = torch.randn(1, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    rows = []
    with torch.no_grad():
        for (name, layer), lab_row in zip(model.named_children(), lab.LENET_SHAPE_WALK):
            if isinstance(layer, torch.nn.Linear) and x.dim() > 2:
                x = torch.flatten(x, 1)
            x = layer(x)
            weight = getattr(layer, "weight", None)
            bias = getattr(layer, "bias", None)
            rows.append({
                "name": name, "output": list(x.shape),
                "weight": list(weight.shape) if weight is not None else None,
                "bias": list(bias.shape) if bias is not None else None,
                "lab_name": lab_row[0], "lab_output": lab_row[1],
                "lab_weight": lab_row[2], "lab_bias": lab_row[3],
                "output_match": list(x.shape) == lab_row[1],
            })
    return {"rows": rows, "all_match": all(r["output_match"] for r in rows)}


# --------------------------------------------------------- 4. parameters and FLOPs (5.3.2, 5.4.1)

def phase_counting(ctx) -> dict:
    from cnnlab.analysis.counting import summarize
    from cnnlab.models import build_model

    out = {}
    for name in ("lenet", "resnet18", "resnet18-plain"):   # plain: for the trainings' FLOPs
        s = summarize(build_model(name), (1, 1, 32, 32), name=name).to_dict()
        out[name] = {k: s[k] for k in ("trainable_params", "buffer_values", "lab_params", "flops",
                                       "macs", "uncounted")}
        if name == "lenet":
            out[name]["layers"] = [
                {"name": r["name"], "type": r["type"], "output_shape": r["output_shape"],
                 "params": r["params"], "flops": r["flops"]} for r in s["layers"]]
    lenet, resnet = out["lenet"], out["resnet18"]
    lenet["lab_layers"] = [{"name": n, "params": p, "flops": f} for n, p, f in lab.LENET_LAYERS]
    lenet["match"] = (lenet["lab_params"] == lab.LENET_PARAMS and lenet["flops"] == lab.LENET_FLOPS
                      and [(r["params"], r["flops"]) for r in lenet["layers"]]
                      == [(p, f) for _, p, f in lab.LENET_LAYERS])
    resnet["match"] = (resnet["lab_params"] == lab.RESNET18_LAB_PARAMS
                       and resnet["trainable_params"] == lab.RESNET18_TRUE_TRAINABLE
                       and resnet["flops"] == lab.RESNET18_FLOPS)
    return out


# ----------------------------------------------------------------- 5. custom vs native speed

def _lab_model_shape(where: str) -> bool:
    # LeNet and the lab's ResNet18 (1x32x32); the CIFAR ResNet18 belongs to part 2 of the lab.
    return any(w.strip().startswith(("lenet", "resnet18 ")) for w in where.split(","))


def phase_speed(ctx) -> dict:
    """A short interleaved timing (ratios, see cnnlab.analysis.speed): forward + backward of
    fast / native on every conv and pool shape of LeNet and ResNet18 (batch 64); then the lab's
    own measurement, forward on ONE image, of the loops (`reference`) / native, per LeNet layer
    and for the whole LeNet (the original code: 2.10 s vs 0.54 ms, ~3,900x)."""
    from cnnlab.analysis import speed

    quick = ctx.options.quick
    batch = 16 if quick else 64
    shapes = [s for s in speed.conv_shapes() if _lab_model_shape(s.where)]
    if quick:  # smoke run: LeNet's convolutions only, no loops
        shapes = [s for s in shapes if s.where.startswith("lenet")]
    conv = speed.measure(batch, "cpu", quick=True, shapes=shapes)   # 1 warm-up + 3 pairs each
    pool = speed.measure_pool(batch, "cpu", quick=True)
    reference = None if quick else _reference_forward(speed)
    return {"batch": batch, "conv": conv, "pool": pool, "reference": reference,
            "environment": speed.environment("cpu")}


def _median_ms(fn, reps) -> float:
    import statistics
    import time

    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1e3 * statistics.median(times)


@torch.no_grad()
def _reference_forward(speed) -> dict:
    """Forward only, batch 1, as the lab's speed cell: the loops vs torch, per LeNet layer and
    for the whole model with the same weights. Native: warm-up + median of 10 calls; loops: one
    call (hundreds of ms of Python loops, where warm-up effects do not matter)."""
    from cnnlab.models import build_model

    gen = torch.Generator().manual_seed(0)
    rows = []
    layers = [(s, "conv") for s in speed.conv_shapes() if s.where.startswith("lenet")]
    layers += [(p, "pool") for p in speed.pool_shapes() if p.where.startswith("lenet")
               and p.mode == ("max" if p.where.endswith("pool2") else "avg")]
    for shape, kind in layers:
        if kind == "conv":
            x = torch.randn(1, shape.d, shape.h, shape.h, generator=gen)
            w = torch.randn(shape.p, shape.d, shape.k, shape.k, generator=gen)
            b = torch.randn(shape.p, generator=gen)
            def run(impl, x=x, w=w, b=b, s=shape):
                return lambda: ops.conv2d(x, w, b, s.s, s.pad, impl=impl)
        else:
            x = torch.randn(1, shape.c, shape.h, shape.h, generator=gen)
            def run(impl, x=x, s=shape):
                return lambda: ops.pool2d(x, s.k, s.s, s.pad, s.mode, impl=impl)
        run("native")()
        t_nat, t_ref = _median_ms(run("native"), 10), _median_ms(run("reference"), 1)
        rows.append({"shape": shape.label(), "where": shape.where, "native_ms": t_nat,
                     "fast_ms": t_ref, "ratio": t_ref / t_nat, "algorithm": "the lab's loops"})
    native = build_model("lenet-native").eval()
    loops = build_model("lenet", conv_impl="reference").eval()
    loops.load_state_dict(native.state_dict())
    x = torch.randn(1, 1, 32, 32, generator=gen)
    native(x)
    t_nat, t_ref = _median_ms(lambda: native(x), 10), _median_ms(lambda: loops(x), 1)
    return {**speed.summarize(rows), "batch": 1,
            "model": {"native_ms": t_nat, "reference_ms": t_ref, "ratio": t_ref / t_nat}}
