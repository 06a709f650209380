"""Markdown helpers shared by every section of report.md (the modules above import only these).

    fmt(0.87) -> "0.8700"    table(header, rows) -> a Markdown table    mark(True) -> "**met**"
    plus_minus(0.9, 0.01) -> "0.9000 ± 0.0100"    shape_text([1, 6]) -> "[1, 6]"
    sci(1e-7) -> "1.0e-07"    relative_to(path, folder)    machine_line(environment)
"""

from __future__ import annotations

from pathlib import Path

MISSING = "–"


def fmt(value, digits=4) -> str:
    """A figure as text: None -> "–", bool -> yes/no, int with thousands separators, float with
    `digits` decimals."""
    if value is None:
        return MISSING
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def table(header, rows) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def mark(ok) -> str:
    """Whether a target was met: "**met**", "**missed**", or "–" when unknown."""
    return MISSING if ok is None else ("**met**" if ok else "**missed**")


def plus_minus(mean, std, digits=4) -> str:
    """"mean ± std" (just the mean when there is no std, "–" when there is no mean)."""
    if mean is None:
        return MISSING
    return f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if std is not None else "")


def shape_text(shape) -> str:
    return "[" + ", ".join(str(v) for v in shape) + "]" if shape is not None else MISSING


def array_text(value) -> str:
    """A nested list as compact text: [[25, 31], [43, 49]]."""
    if isinstance(value, list):
        return "[" + ", ".join(array_text(x) for x in value) + "]"
    if isinstance(value, float) and value == int(value):
        return str(int(value))
    return str(value)


def sci(value) -> str:
    return MISSING if value is None else f"{value:.1e}"


def relative_to(path, folder) -> str:
    """`path` relative to `folder` (POSIX separators), or as given when it is not inside it."""
    try:
        return Path(path).relative_to(folder).as_posix()
    except ValueError:
        return Path(path).as_posix()


def machine_line(env) -> str:
    """CPU, cores, threads, GPU and library versions from results["environment"], on one line."""
    parts = [str(env.get("cpu", MISSING))]
    if env.get("cpus_usable"):
        parts.append(f"{env['cpus_usable']} usable cores")
    if env.get("torch_threads"):
        parts.append(f"torch threads {env['torch_threads']}")
    if env.get("cuda"):
        parts.append(f"GPU {env['cuda'].get('device')}")
    versions = env.get("versions") or {}
    parts += [f"{k} {versions[k]}" for k in ("torch", "torchvision") if versions.get(k)]
    parts.append(f"Python {env.get('python', MISSING)}")
    return ", ".join(parts)


def report_header(heading: str, command: str, quick_note: str | None, env: dict,
                  sources: str) -> str:
    """The top of a reproduce report: its heading, the quick-run warning (when `quick_note`),
    the command, the date, the machine, and the line naming what the figures stand beside."""
    lines = [heading, ""]
    if quick_note:
        lines += [f"> **Quick smoke run** (`--quick`): {quick_note}", ""]
    lines += [f"Command: `{command}`  ", f"Written: {env.get('date', MISSING)}  ",
              f"Machine: {machine_line(env)}", "", sources, ""]
    return "\n".join(lines)
