"""Render results.json of `cnnlab reproduce` as report.md: every measured figure beside the lab's
published one and the original Paddle code's measured one (`lab_figures`), figures embedded by
relative paths. `render_report(results) -> str`; the sections are in `sections.py`."""

from __future__ import annotations

from cnnlab.report import lab_figures as lab
from cnnlab.report import sections, training_section
from cnnlab.report.markdown_helpers import fmt, mark, plus_minus, report_header, table


def render_report(results: dict) -> str:
    out = [_title(results), _summary(results)]
    for key, title, render in sections.SECTIONS:
        phase = results["phases"].get(key)
        out.append(f"## {title}\n")
        if phase is None:
            out.append("_Not run._\n")
        elif "error" in phase:
            out.append(f"_This phase failed_: `{phase['error']}`\n")
        else:
            out.append(render(phase, results).rstrip() + "\n")
    out.append("## Time and memory\n")
    out.append(training_section.render_budget(results).rstrip() + "\n")
    out.append("## What differs from the lab\n")
    out.append(training_section.render_differences(results).rstrip() + "\n")
    return "\n".join(out)


def _title(results) -> str:
    opts = results["options"]
    env = results.get("environment", {})
    cmd = "cnnlab reproduce --out " + str(opts["out"])
    if opts.get("seeds", 1) != 1:
        cmd += f" --seeds {opts['seeds']}"
    if opts.get("quick"):
        cmd += " --quick"
    quick = ("tiny data subsets and 1 epoch, so the accuracies below are NOT comparable with "
             "the lab's. Run without `--quick` for the real reproduction.")
    return report_header(
        "# The NNDL chapter-5 lab (实验5, part 1) re-run with cnnlab", cmd,
        quick if opts.get("quick") else None, env,
        "Each figure is shown beside **the lab's published one** (" + lab.LAB_SOURCE + ") "
        "and, where it exists, **the original Paddle code's measured one** ("
        + lab.ORIGINAL_SOURCE + ").")


def _summary(results) -> str:
    phases = results["phases"]
    rows = []
    for name in lab.TRAINING_ORDER:
        training = phases.get(f"train:{name}") or {}
        if "runs" not in training:
            continue
        spec = lab.TRAININGS[name]
        acc = training["stats"]["test_acc"]
        ours = fmt(training["runs"][0]["test_acc"])
        if len(training["runs"]) > 1:
            ours += f" (mean {plus_minus(acc['mean'], acc['std'])})"
        rows.append([f"{spec['title']}: test accuracy", ours, fmt(spec["lab"]["test_acc"]),
                     fmt(spec["original"]["test_acc"], 3),
                     f"≥ {spec['bar']:.2f}: {mark(training['bar_met'])}"])
    budget = results.get("budget", {})
    rows.append(["whole run, wall time", f"{fmt(budget.get('command_wall_s'), 1)} s", "–",
                 f"{lab.ORIGINAL_TOTAL_S:.0f} s (3 trainings)",
                 f"≤ {lab.TARGET_TOTAL_S:.0f} s: {mark(budget.get('time_met'))}"])
    rows.append(["peak RSS", f"{fmt(budget.get('peak_rss_gb'), 2)} GB", "–",
                 f"{lab.ORIGINAL_PEAK_RSS_GB} GB (custom LeNet)",
                 f"≤ {lab.TARGET_RSS_GB} GB: {mark(budget.get('rss_met'))}"])
    checks = [("operator worked examples", (phases.get("ops") or {}).get("examples")),
              ("operator checks vs torch", (phases.get("ops") or {}).get("all_passed")),
              ("LeNet shapes", (phases.get("shape_walk") or {}).get("all_match")),
              ("ResNet18 vs torchvision",
               ((phases.get("torchvision_check") or {}).get("proper") or {}).get("passed"))]
    lines = ["## Summary", "", table(["", "cnnlab", "lab (published)", "original code (measured)",
                                      "issue's bar"], rows), ""]
    done = []
    for label, value in checks:
        if isinstance(value, list):
            value = all(r.get("match") for r in value) if value else None
        done.append(f"{label}: {'pass' if value else ('–' if value is None else 'FAIL')}")
    claim = budget.get("residual_claim", {})
    lines += ["Checks: " + "; ".join(done) + ".  ",
              f"The lab's claim \"residual beats plain\": **{claim.get('verdict', '–')}** "
              "(section 8).", ""]
    return "\n".join(lines)
