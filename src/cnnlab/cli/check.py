"""`cnnlab check`: every equivalence check, its largest absolute difference and tolerance."""

from __future__ import annotations

from cnnlab.atomic import json_text


def register(sub):
    p = sub.add_parser(
        "check",
        help="check operators and models against torch/torchvision (exit 0 only if all pass)",
        description=(
            "Run every equivalence check: cnnlab's fast and reference operators vs torch over a "
            "sweep of shapes, strides and paddings (outputs and gradients); LeNet on cnnlab's "
            "operators vs LeNet on torch layers with the same weights; our ResNet18 vs "
            "torchvision's resnet18 (strict loading both ways, eval mode, random non-default "
            "BatchNorm statistics, batch 2, max |diff|). Exit status 0 only if all pass, else 1."
        ),
    )
    p.add_argument("--json", action="store_true",
                   help='print {"checks": [{"name", "max_abs_diff", "tolerance", "passed"}]}')
    p.set_defaults(func=run)


def _op_checks() -> list[dict]:
    try:
        from cnnlab.ops.selfcheck import run_op_checks
    except ImportError:  # the operator checks are not in this tree yet
        return []
    return list(run_op_checks())


def collect_checks() -> list[dict]:
    """Operator checks followed by model checks."""
    from cnnlab.models.selfcheck import run_model_checks

    return _op_checks() + list(run_model_checks())


def _fmt(value):
    return "-" if value is None else f"{value:.2e}"


def _print_table(checks):
    from rich.markup import escape
    from rich.table import Table

    from cnnlab.cli.summary import console

    table = Table(title="cnnlab check")
    table.add_column("check")  # long names wrap; the figures never do
    table.add_column("max |diff|", justify="right", no_wrap=True)
    table.add_column("tolerance", justify="right", no_wrap=True)
    table.add_column("result", no_wrap=True)
    for c in checks:
        result = "[green]pass[/]" if c["passed"] else "[bold red]FAIL[/]"
        name = escape(c["name"])
        if c.get("error"):
            name += f"\n[red]{escape(c['error'])}[/]"
        table.add_row(name, _fmt(c["max_abs_diff"]), _fmt(c["tolerance"]), result)
    out = console()
    out.print(table)
    failed = sum(not c["passed"] for c in checks)
    if failed:
        out.print(f"[bold red]{failed} of {len(checks)} checks failed[/]")
    else:
        out.print(f"[green]all {len(checks)} checks passed[/]")


def run(args) -> int:
    checks = collect_checks()
    if args.json:
        print(json_text({"checks": checks}, indent=2))
    else:
        _print_table(checks)
    return 0 if checks and all(c["passed"] for c in checks) else 1
