"""`cnnlab summary MODEL`: per-layer shapes, parameters and FLOPs by the lab's conventions."""

from __future__ import annotations

from cnnlab.atomic import json_text
from cnnlab.errors import UserError

NOTE = (
    "params = parameters + BatchNorm running mean/var (the lab's paddle.summary total); "
    "FLOPs by the lab's paddle.flops rules; MACs = conv + linear multiply-accumulates. "
    "The lab printed ResNet18 as 11,165,834 trainable / 19,200 non-trainable: a bug of old Paddle "
    "(<= 2.2) that counted every BN tensor as non-trainable; the right split is trainable + "
    "BN statistics above."
)


def parse_input_size(text: str) -> tuple[int, ...]:
    """"1,1,32,32" -> (1, 1, 32, 32): batch, channels, height, width, all positive."""
    parts = [p.strip() for p in str(text).split(",")]
    try:
        size = tuple(int(p) for p in parts)
    except ValueError:
        raise UserError(f"--input-size must be 4 comma-separated integers B,C,H,W "
                        f"(e.g. 1,1,32,32), got {text!r}") from None
    if len(size) != 4 or min(size) < 1:
        raise UserError(f"--input-size must be 4 positive integers B,C,H,W (e.g. 1,1,32,32), "
                        f"got {text!r}")
    return size


# Written out so that `cnnlab --help` need not import torch; a test keeps it equal to MODEL_NAMES.
MODELS_HELP = ("one of: lenet, lenet-native, resnet18, resnet18-plain, resnet18-vision, "
               "resnet18-cifar")


def register(sub):
    p = sub.add_parser(
        "summary",
        help="per-layer shapes, parameters and FLOPs of a model (the lab's conventions)",
        description=(
            "Run one forward pass of MODEL and print, per layer, its input/output shape, "
            "parameters and FLOPs, then the totals: trainable parameters, BatchNorm running "
            "statistics, the lab's parameter count (both together), FLOPs (the lab's "
            "paddle.flops rules) and MACs (conv + linear). "
            "Expected: lenet 61,706 params / 423,344 FLOPs; resnet18 11,185,034 / 35,529,728; "
            "resnet18-vision 11,191,242 / 37,118,976; resnet18-cifar 11,183,562 / 556,660,224."
        ),
    )
    p.add_argument("model", metavar="MODEL", help=MODELS_HELP)
    p.add_argument("--input-size", metavar="B,C,H,W", default=None,
                   help="input shape (default 1,1,32,32; 1,3,32,32 for resnet18-vision and "
                        "resnet18-cifar)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)


def summarize_model(name: str, input_size=None) -> dict:
    """The summary of model `name` as a dict (the JSON that `cnnlab summary --json` prints)."""
    from cnnlab.analysis import summarize
    from cnnlab.models import build_model, default_input_size

    model = build_model(name)  # raises UserError listing the known names
    size = default_input_size(name) if input_size is None else tuple(input_size)
    expected = default_input_size(name)[1]
    if size[1] != expected:
        raise UserError(f"model {name} takes {expected} input channel(s), "
                        f"--input-size {','.join(map(str, size))} gives {size[1]}")
    try:
        summary = summarize(model, size, name=name)
    except (RuntimeError, ValueError) as err:
        # A spatial size the model cannot take (e.g. LeNet needs 32x32 to reach 1x1 at conv5).
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"model {name} cannot run on input size {','.join(map(str, size))}: "
                        f"{first}") from None
    return summary.to_dict()


def _fmt_shape(shape):
    return "-" if shape is None else "[" + ", ".join(map(str, shape)) + "]"


def console():
    """A rich console; piped output gets 120 columns instead of 80 so rows do not wrap."""
    from rich.console import Console

    con = Console()
    return con if con.is_terminal else Console(width=120)


def _print_table(data):
    from rich.table import Table

    table = Table(title=f"{data['model']}  input {_fmt_shape(data['input_size'])}")
    for col, justify in [("layer", "left"), ("type", "left"), ("input", "right"),
                         ("output", "right"), ("params", "right"), ("FLOPs", "right")]:
        table.add_column(col, justify=justify, no_wrap=True)
    for row in data["layers"]:
        flops = "uncounted" if row["flops"] is None else f"{row['flops']:,}"
        called = row["note"] != "not called"
        table.add_row(row["name"], row["type"],
                      _fmt_shape(row["input_shape"]) if called else "(not called)",
                      _fmt_shape(row["output_shape"]), f"{row['params']:,}", flops)
    out = console()
    out.print(table)
    out.print(f"trainable params     {data['trainable_params']:>14,}")
    out.print(f"BN running stats     {data['buffer_values']:>14,}")
    out.print(f"lab params (total)   {data['lab_params']:>14,}")
    out.print(f"FLOPs (lab rules)    {data['flops']:>14,}")
    out.print(f"MACs (conv+linear)   {data['macs']:>14,}")
    if data["uncounted"]:
        out.print(f"[bold red]uncounted (no FLOPs rule):[/] {', '.join(data['uncounted'])}")
    out.print(NOTE, style="dim")


def run(args) -> int:
    size = None if args.input_size is None else parse_input_size(args.input_size)
    data = summarize_model(args.model, size)
    if args.json:
        print(json_text(data, indent=2))
    else:
        _print_table(data)
    return 0
