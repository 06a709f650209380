"""Every GPU measurement of the project in one bounded run (under 10 minutes on one GPU).

    python benchmarks/gpu.py [--data cifar10:PATH] [--budget 570] [--json-out FILE]
    python benchmarks/gpu.py --dry-run     # every step on the CPU at toy sizes: checks the script

Fails at once, with exit status 2 and one line, on a machine without a CUDA GPU. Otherwise, in
order, each step a fresh process with its own time limit, and none started once the budget
(seconds, default 570) could not hold it:
 1. data: the real CIFAR-10 given by --data, else a synthetic set of CIFAR's size in the
    official format (cnnlab.data.synthetic: 50,000 + 10,000 images; accuracy on it means
    nothing, time does);
 2. `cnnlab train --recipe lab`, 1 epoch (625 steps of 64): img/s, time per epoch, the
    30-epoch run projected;
 3. `cnnlab train --recipe fast`, the whole 20 epochs: wall time, time per epoch, img/s;
 4. the same with --compile;
 5. `benchmarks/ops.py --device cuda` (our operators vs cuDNN, per layer shape);
 6. `benchmarks/models.py --device cuda` (training step, our operators vs torch's layers);
 7. `benchmarks/cifar.py --devices cuda` (Runner vs a bare loop, fp32/bf16, channels-last,
    native/fast operators);
 8. `benchmarks/ddp.py` on the GPUs, where that benchmark exists.
Training img/s count the training steps alone (evaluations and saves left out; run.json's
`train_images_per_s`); every timing inside the steps synchronises the GPU before reading the
clock. A summary table ends the output; --json-out writes every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"


def fail_without_gpu() -> dict:
    import torch

    if not torch.cuda.is_available():
        print("benchmarks/gpu.py: error: no CUDA GPU here (torch.cuda.is_available() is False); "
              "this script measures the GPU side only: run it on a machine with a GPU",
              file=sys.stderr)
        raise SystemExit(2)
    props = torch.cuda.get_device_properties(0)
    return {"gpu": torch.cuda.get_device_name(0), "gpus": torch.cuda.device_count(),
            "memory_gib": round(props.total_memory / 2**30, 1), "torch": torch.__version__,
            "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
            "bf16": torch.cuda.is_bf16_supported()}


class Steps:
    """Runs each step as a subprocess within the remaining budget; keeps every outcome."""

    def __init__(self, budget_s: float):
        self.deadline = time.monotonic() + budget_s
        self.outcomes = []
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(BENCH),
                                             env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        env["PYTHONUNBUFFERED"] = "1"
        self.env = env

    def run(self, name: str, argv: list, limit_s: float) -> dict:
        left = self.deadline - time.monotonic()
        outcome = {"step": name, "command": " ".join(map(str, argv))}
        if left < min(limit_s, 30):
            outcome.update(status="skipped", why=f"{left:.0f} s of the budget left")
            print(f"\n== {name}: skipped ({outcome['why']})", flush=True)
            self.outcomes.append(outcome)
            return outcome
        timeout = min(limit_s, left)
        print(f"\n== {name} (limit {timeout:.0f} s): {outcome['command']}", flush=True)
        start = time.monotonic()
        try:
            proc = subprocess.run([sys.executable, *map(str, argv)], cwd=ROOT, env=self.env,
                                  capture_output=True, text=True, timeout=timeout)
            outcome.update(status="ok" if proc.returncode == 0 else f"exit {proc.returncode}",
                           stdout=proc.stdout[-6000:], stderr=proc.stderr[-3000:])
        except subprocess.TimeoutExpired as err:  # its output is bytes, whatever text= says
            out = err.stdout or b""
            out = out.decode(errors="replace") if isinstance(out, bytes) else out
            outcome.update(status=f"timed out after {timeout:.0f} s", stdout=out[-6000:])
        outcome["wall_s"] = round(time.monotonic() - start, 1)
        print(outcome.get("stdout", "").rstrip()[-3000:])
        if outcome["status"] != "ok":
            print(f"-- {name}: {outcome['status']}\n{outcome.get('stderr', '')[-1500:]}")
        self.outcomes.append(outcome)
        return outcome


def synthetic_data(folder: Path, per_batch: int = 10_000) -> tuple[str, float]:
    from cnnlab.data.synthetic import write_cifar10

    start = time.perf_counter()
    write_cifar10(folder, per_batch=per_batch, archive=False)
    return f"cifar10:{folder}", time.perf_counter() - start


def training(steps: Steps, name, data, out: Path, extra, limit_s, device="cuda") -> dict:
    argv = ["-m", "cnnlab.cli", "train", "--data", data, "--out", out, "--overwrite",
            "--device", device, "--quiet", *extra]
    outcome = steps.run(name, argv, limit_s)
    run_json = out / "run.json"
    if outcome["status"] == "ok" and run_json.is_file():
        run = json.loads(run_json.read_text())
        res, cfg = run["results"], run["config"]
        phases = res["phases_s"]
        outcome["figures"] = {
            "epochs": cfg["epochs"], "batch": cfg["batch_size"], "amp": cfg["amp"],
            "channels_last": cfg["channels_last"], "compile": cfg["compile"],
            "train_images_per_s": res["train_images_per_s"], "wall_s": run["wall_s"],
            "train_s": phases["train_s"], "epoch_s": phases["train_s"] / max(cfg["epochs"], 1),
            "test_acc": res["test_acc"]}
    return outcome


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=None, metavar="cifar10:PATH",
                    help="the real CIFAR-10 (default: a synthetic set of its size)")
    ap.add_argument("--budget", type=float, default=570.0,
                    help="seconds for everything (default 570: under 10 minutes)")
    ap.add_argument("--json-out", default=None, metavar="FILE", help="write every figure here")
    ap.add_argument("--dry-run", action="store_true",
                    help="run every step on the CPU at toy sizes (checks this script; measures "
                         "nothing)")
    args = ap.parse_args(argv)
    started = time.monotonic()
    env = fail_without_gpu() if not args.dry_run else {
        "gpu": "none (dry run on the CPU)", "gpus": 0, "memory_gib": 0, "torch": "-",
        "cuda": None, "cudnn": None, "bf16": False}
    dry = args.dry_run
    device = "cpu" if dry else "cuda"
    # --dry-run: toy sizes of every step
    toy = ["--subset", "24", "--batch-size", "8", "--epochs", "1", "--eval-steps", "2"]
    quick = ["--quick"] if dry else []
    print(f"GPU: {env['gpu']} x{env['gpus']} ({env['memory_gib']} GiB), torch {env['torch']}, "
          f"CUDA {env['cuda']}, cuDNN {env['cudnn']}, bf16 {env['bf16']}", flush=True)
    steps = Steps(args.budget - 5)
    with tempfile.TemporaryDirectory(prefix="cnnlab-gpu-") as tmp:
        tmp = Path(tmp)
        if args.data:
            data, data_note = args.data, "real CIFAR-10"
        else:
            data, write_s = synthetic_data(tmp / "cifar", 30 if dry else 10_000)
            data_note = f"synthetic, CIFAR's size (written in {write_s:.1f} s)"
        print(f"data: {data} ({data_note})", flush=True)
        lab = training(steps, "lab recipe, 1 epoch", data, tmp / "lab",
                       ["--recipe", "lab", "--epochs", "1", *(toy if dry else [])], 150, device)
        fast = training(steps, "fast recipe, 20 epochs", data, tmp / "fast",
                        ["--recipe", "fast", *(toy if dry else [])], 180, device)
        compiled = None
        if not dry:  # torch.compile on a CPU needs a C++ compiler and minutes
            compiled = training(steps, "fast recipe, 20 epochs, --compile", data,
                                tmp / "compiled", ["--recipe", "fast", "--compile"], 240)
        steps.run(f"ops.py --device {device}", [BENCH / "ops.py", "--device", device, *quick,
                                                *(["--skip", "reference"] if dry else [])], 120)
        steps.run(f"models.py --device {device}", [BENCH / "models.py", "--device", device,
                                                   *quick, *(["--batch", "4"] if dry else [])],
                  90)
        steps.run(f"cifar.py --devices {device}",
                  [BENCH / "cifar.py", "--devices", device, "--steps", "8", "--pairs", "3"]
                  if not dry else [BENCH / "cifar.py", "--devices", "cpu", "--quick",
                                   "--models", "resnet18-vision", "--ops", "native",
                                   "--amp", "off", "--pairs", "1"], 150)
        if (BENCH / "ddp.py").is_file():
            steps.run("ddp.py on the GPUs", [BENCH / "ddp.py", "--device", device], 90)
    summary = summarise(env, data_note, lab, fast, compiled or {}, steps.outcomes,
                        time.monotonic() - started)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({"environment": env, "data": data_note,
                                                   "steps": steps.outcomes, "summary": summary},
                                                  indent=1))
    return 0 if all(o["status"] in ("ok", "skipped") for o in steps.outcomes) else 1


def summarise(env, data_note, lab, fast, compiled, outcomes, total_s) -> dict:
    rows = {}
    print(f"\n===== summary: {env['gpu']}, torch {env['torch']}, data {data_note}")
    lab_f = lab.get("figures")
    if lab_f:
        rows["lab"] = {**lab_f, "projected_30_epochs_s": 30 * lab_f["epoch_s"]}
        print(f"lab recipe: {lab_f['train_images_per_s']:,.0f} img/s (batch {lab_f['batch']}, "
              f"amp {lab_f['amp']}), {lab_f['epoch_s']:.1f} s an epoch with its evaluation; 30 "
              f"epochs projected {30 * lab_f['epoch_s']:.0f} s")
    for name, outcome in (("fast", fast), ("fast --compile", compiled)):
        f = outcome.get("figures")
        if f:
            rows[name] = f
            print(f"{name} recipe: {f['train_images_per_s']:,.0f} img/s (batch {f['batch']}, "
                  f"amp {f['amp']}, channels-last {f['channels_last']}), {f['epoch_s']:.2f} s an "
                  f"epoch, {f['epochs']} epochs: training {f['train_s']:.1f} s, whole run "
                  f"{f['wall_s']:.1f} s (goal <= 30 s on one H200)")
    for o in outcomes:
        print(f"  {o['step']:40s} {o['status']:24s} {o.get('wall_s', 0):6.1f} s")
    print(f"total {total_s:.0f} s")
    return rows


if __name__ == "__main__":
    sys.exit(main())
