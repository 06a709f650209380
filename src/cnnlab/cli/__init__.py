"""The `cnnlab` command line: one module per group of subcommands.

Each module in `COMMAND_MODULES` has `register(subparsers)`, which adds its subcommands and sets
`func(args) -> int` on each. A `UserError` -- what every check of a user's input raises, where it
detects the mistake -- becomes one line on stderr and exit status 2. Any other exception, a
plain ValueError included, is a bug and keeps its traceback: caught here it would read as the
user's fault and lose what is needed to fix it.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from cnnlab import __version__
from cnnlab.errors import UserError

COMMAND_MODULES = [
    "summary",    # cnnlab summary
    "check",      # cnnlab check
    "train",      # cnnlab train
    "evaluate",   # cnnlab evaluate, cnnlab predict
    "edges",      # cnnlab edges
    "reproduce",  # cnnlab reproduce
    "paddle",     # cnnlab convert-paddle, cnnlab export-paddle
    "data",       # cnnlab data fetch, cnnlab data info
    "explore",    # cnnlab explore
    "tune",       # cnnlab tune
]


DESCRIPTION = ("The convolutional-network lab of NNDL chapter 5 (实验5) on PyTorch: the lab's "
               "operators, models, trainings (MNIST, CIFAR-10) and its whole reproduction.")


class _Parser(argparse.ArgumentParser):
    # argparse exits with status 2 on a usage error already; keep its message to one line.
    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="cnnlab", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"cnnlab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(f"cnnlab.cli.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = [str(a) for a in (sys.argv[1:] if argv is None else argv)]  # e.g. for workers
    try:
        return int(args.func(args) or 0)
    except UserError as err:
        print(f"cnnlab {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"cnnlab {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `cnnlab ... | head` closed the pipe: not an error worth a traceback.
        # Point stdout at devnull so the interpreter's final flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
