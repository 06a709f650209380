"""The options every timing benchmark shares (device, batch, repetitions, JSON, clock)."""

import sys

import torch

from cnnlab.analysis import speed

CLOCK_HELP = ("wall: elapsed time with torch's default threads (default); cpu: this thread's CPU "
              "time with torch on 1 thread, which other processes' load cannot inflate (for a "
              "shared machine)")


def add_timing_arguments(ap, what):
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--reps", type=int, default=7, help=f"interleaved pairs per {what} (default 7)")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    ap.add_argument("--quick", action="store_true", help="fewer repetitions (a smoke run)")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall", help=CLOCK_HELP)


def apply_timing_arguments(args):
    """Check the device/clock pair and set the clock; returns an exit code (0 = go on)."""
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but torch.cuda.is_available() is False", file=sys.stderr)
        return 2
    if args.clock == "cpu" and args.device == "cuda":
        print("error: --clock cpu times CPU work; use the wall clock on cuda", file=sys.stderr)
        return 2
    speed.set_clock(args.clock)
    return 0


def print_header(env, batch, what):
    """One line saying what was measured and where: versions, device, threads, clock, load."""
    print(f"torch {env['torch']}, {env['device']} ({env['device_name']}), {env['threads']} threads, "
          f"{env['clock']} clock, load average {env['load_average']:.1f}, autotune "
          f"{env['autotune']}, batch {batch}, float32, {what}, median of interleaved pairs\n")
