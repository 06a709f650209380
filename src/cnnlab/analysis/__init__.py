"""Accounting and analysis of the lab's models.

- `counting`: per-layer table, parameters (trainable, BN statistics, the lab's total), FLOPs by
  the lab's rules and MACs: `summarize(model, input_size)`, `count_params(model)`.
"""

from cnnlab.analysis.counting import LayerRow, Summary, count_params, find_rule, summarize

__all__ = ["LayerRow", "Summary", "count_params", "find_rule", "summarize"]
