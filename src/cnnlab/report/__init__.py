"""`cnnlab reproduce` and its report: the lab's part 1 re-run, every figure beside the lab's.

- `reproduce.py`: the phases in order, timing, peak RSS, results.json / run.json / report.md.
- `phases.py`: operators, edges, LeNet shape walk, counting, speed.
- `trainings.py`: the three trainings (seeds), the prediction demo, the residual claim, budget.
- `torchvision_check.py`: ResNet18 vs torchvision, done right and the lab's (vacuous) way.
- `lab_figures.py`: the lab's published numbers and the original code's measured ones, as data.
- `markdown.py`, `sections.py`, `training_section.py`, `speed_section.py`: report.md, all on
  `markdown_helpers.py` (fmt, table, mark, plus_minus, ...).
- `figures.py`: edges.png and predict.png.
"""

from cnnlab.report.reproduce import ReproduceOptions, reproduce

__all__ = ["ReproduceOptions", "reproduce"]
