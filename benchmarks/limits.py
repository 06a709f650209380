"""What limits the slowest fast-conv shapes: their matrix products alone vs torch's whole conv.

    python benchmarks/limits.py [--batch 64] [--reps 9] [--clock wall|cpu]

For the shapes where `conv2d(impl="fast")` is furthest from F.conv2d (LeNet's conv3, ResNet18's
64-channel 3x3 convs), times in one interleaved run (the order rotates every round, median):
  native   F.conv2d forward + backward (dx, dW, db)
  fast     cnnlab's conv2d forward + backward (the algorithm the rules pick, forced: the
           autotuner may pick another; `cnnlab tune` and benchmarks/ops.py show its choice)
  gemm     only the matrix products that algorithm performs, on preallocated contiguous
           operands of the same shapes (no im2col copy, no layout change, no col2im)
If `gemm` alone is already close to `native`, no rearrangement of copies can bring `fast` to
native's speed with these BLAS calls: what is left is the cost of the copies themselves.
GFLOP/s counts 3 x 2*B*P*K*M'*N' (forward, dx, dW) for every column, so they compare directly.

Then the LeNet training step (one SGD step) with all of our operators, and with one layer at a
time swapped for torch's (same weights), each over torch's LeNet: which layer makes the gap.
"""

import argparse
import copy
import statistics
import sys
import time

import torch
import torch.nn.functional as F

from cnnlab.analysis import speed
from cnnlab.models import build_model
from cnnlab.ops import fast_conv

from _timing_args import CLOCK_HELP


def _products(algo, b, d, p, h, k, pad):
    """Closures for the matrix products of `algo` on this shape (see each algorithm's module)."""
    ho = h + 2 * pad - k + 1
    hp = h + 2 * pad
    r, kk, L = b * ho * ho, d * k * k, ho * ho
    t = torch.randn
    if algo == "unfold":       # per-image products; dx: P <= 2D by the columns of dY padded
        w, cols, g = t(p, kk), t(b, kk, L), t(b, p, L)   # (one product), else by U*V shifted
        if p <= 2 * d:                                    # products (_conv_dx)
            wf, gcols = t(d, p * k * k), t(b, p * k * k, h * h)
            dx = lambda: torch.matmul(wf, gcols)
        else:
            wt, gf, acc = t(k * k, d, p), t(p, b * hp * hp), t(d, b * hp * hp)
            dx = lambda: [acc.addmm_(wt[i], gf) for i in range(k * k)]
        return [lambda: torch.matmul(w, cols), lambda: torch.bmm(g, cols.transpose(1, 2)).sum(0),
                dx]
    if algo == "im2col":       # one product each over channels-last rows
        rows, w, g = t(r, kk), t(kk, p), t(r, p)
        return [lambda: torch.mm(rows, w), lambda: torch.mm(g.t(), rows), lambda: torch.mm(rows, w)]
    if algo == "shift":        # U*V products over shifted row blocks of the padded grid
        rp, offsets = b * hp * hp, [u * hp + v for u in range(k) for v in range(k)]
        x, g, acc, dx = t(rp + offsets[-1], d), t(rp, p), t(rp, p), t(rp + offsets[-1], d)
        w, wt, gw = t(k * k, d, p), t(k * k, p, d), t(k * k, d, p)
        return [lambda: [acc.addmm_(x[o:o + rp], w[i]) for i, o in enumerate(offsets)],
                lambda: [gw[i].addmm_(x[o:o + rp].t(), g) for i, o in enumerate(offsets)],
                lambda: [dx[o:o + rp].addmm_(g, wt[i]) for i, o in enumerate(offsets)]]
    raise ValueError(algo)


SHAPES = [  # (D, P, H, K, pad, where)
    (6, 16, 14, 5, 0, "lenet conv3"),
    (64, 64, 8, 3, 1, "resnet18 layer1 3x3"),
    (64, 64, 32, 3, 1, "resnet18-cifar layer1 3x3"),
]


def rotated(runs, reps, clock):
    """Median seconds of each closure; the order rotates every round so drift hits all alike."""
    names, times = list(runs), {n: [] for n in runs}
    for n in names:
        runs[n]()                                        # warm-up
    for rnd in range(reps):
        k = rnd % len(names)
        for n in names[k:] + names[:k]:
            t0 = clock()
            runs[n]()
            times[n].append(clock() - t0)
    return {n: statistics.median(v) for n, v in times.items()}


def lenet_swaps(batch, reps, clock):
    """LeNet step, all ours and with one layer swapped for torch's, each / torch's LeNet."""
    torch.manual_seed(0)
    ours, native = build_model("lenet", conv_impl="fast"), build_model("lenet-native")
    native.load_state_dict(ours.state_dict())
    models = {"torch's LeNet": native, "all ours": ours}
    for layer in ("conv1", "pool2", "conv3", "pool4", "conv5"):
        m = copy.deepcopy(ours)
        setattr(m, layer, copy.deepcopy(getattr(native, layer)))
        models[f"ours, {layer} torch's"] = m
    med = rotated({n: speed.train_step(m, batch, torch.device("cpu")) for n, m in models.items()},
                  reps, clock)
    print("\nLeNet training step / torch's LeNet")
    for n, t in med.items():
        print(f"  {n:<22}{1e3 * t:>8.2f} ms {t / med[next(iter(med))]:>6.2f}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--reps", type=int, default=9, help="rounds (default 9)")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall", help=CLOCK_HELP)
    args = ap.parse_args(argv)
    clock = time.perf_counter if args.clock == "wall" else time.thread_time
    if args.clock == "cpu":
        torch.set_num_threads(1)
    b = args.batch
    print(f"torch {torch.__version__}, cpu, {torch.get_num_threads()} threads, {args.clock} clock, "
          f"batch {b}, float32, median of {args.reps} rotated rounds\n")
    print(f"{'shape':<26}{'algorithm':<10}{'native ms':>10}{'fast ms':>9}{'gemm ms':>9}"
          f"{'fast/nat':>9}{'gemm/nat':>9}   GFLOP/s native / fast / gemm")
    for d, p, h, k, pad, where in SHAPES:
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(b, d, h, h, generator=gen).requires_grad_()
        w = (torch.randn(p, d, k, k, generator=gen) / (d * k * k) ** 0.5).requires_grad_()
        bias = torch.zeros(p, requires_grad=True)
        ho = h + 2 * pad - k + 1
        gy = torch.randn(b, p, ho, ho, generator=gen)
        geo = fast_conv.geometry(x.shape, w.shape, (1, 1), (pad, pad))
        algo = fast_conv.choose_algorithm(x.shape, w.shape, geo)
        gemms = _products(algo, b, d, p, h, k, pad)
        runs = {"native": lambda: F.conv2d(x, w, bias, 1, pad).backward(gy),
                "fast": lambda: fast_conv.conv2d(x, w, bias, (1, 1), (pad, pad),
                                                 algo=algo).backward(gy),
                "gemm": lambda: [f() for f in gemms]}
        names = list(runs)
        med = {n: t * 1e3 for n, t in rotated(runs, args.reps, clock).items()}
        flops = 3 * 2 * b * p * d * k * k * ho * ho / 1e6        # MFLOP -> GFLOP/s with ms
        rate = " / ".join(f"{flops / med[n]:.0f}" for n in names)
        print(f"{d:>3}->{p:<3} {k}x{k} @{h}x{h}{'':<{13 - len(str(h)) * 2}}{algo:<10}"
              f"{med['native']:>10.2f}{med['fast']:>9.2f}{med['gemm']:>9.2f}"
              f"{med['fast'] / med['native']:>9.2f}{med['gemm'] / med['native']:>9.2f}   {rate}"
              f"   ({where})")
    lenet_swaps(b, 2 * args.reps, clock)
    return 0


if __name__ == "__main__":
    sys.exit(main())
