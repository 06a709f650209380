"""The lab's accuracy metric (nndl `metric.Accuracy(is_logist=True)`), with `update/accumulate/reset`.

Counts stay as tensors between `update` calls so evaluation does not synchronise a GPU once per
batch; `accumulate` turns them into a plain float.
"""

from __future__ import annotations

import torch


class Accuracy:
    """Fraction of correct predictions over every sample seen since the last `reset`.

    outputs [B,K], labels [B] or [B,1]:
    - K > 1: multi-class, the prediction is argmax over K (logits or probabilities alike);
    - K == 1: binary, the prediction is `output >= 0` for logits (`is_logits=True`) or
      `output >= 0.5` for probabilities.
    """

    def __init__(self, is_logits: bool = True):
        self.is_logits = is_logits
        self.reset()

    def reset(self):
        self.num_correct = 0
        self.num_count = 0

    @torch.no_grad()
    def update(self, outputs: torch.Tensor, labels: torch.Tensor):
        if outputs.dim() == 1:
            outputs = outputs.unsqueeze(1)
        labels = labels.reshape(-1)
        if outputs.shape[0] != labels.shape[0]:
            raise ValueError(f"Accuracy.update: {outputs.shape[0]} outputs but {labels.shape[0]} labels")
        if outputs.shape[1] == 1:
            threshold = 0.0 if self.is_logits else 0.5
            preds = (outputs[:, 0] >= threshold).to(labels.dtype)
        else:
            preds = outputs.argmax(dim=1)
        self.num_correct = self.num_correct + (preds == labels).sum()
        self.num_count += labels.shape[0]

    def accumulate(self) -> float:
        """Accuracy so far as a float; 0.0 before any sample, as in the lab."""
        if self.num_count == 0:
            return 0.0
        return float(self.num_correct) / self.num_count

    def name(self) -> str:
        return "acc"
