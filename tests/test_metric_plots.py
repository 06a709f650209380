"""Accuracy (the lab's nndl metric, binary and multi-class) and the training-curves figure."""

import pytest
import torch

from cnnlab.train.metric import Accuracy
from cnnlab.train.plots import plot_training_loss_acc

PNG = b"\x89PNG\r\n\x1a\n"


def test_multiclass_argmax_logits_and_probabilities_alike():
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.1, 0.2, 3.0], [1.0, 5.0, -1.0], [0.0, 0.0, 1.0]])
    labels = torch.tensor([0, 2, 0, 2])          # 3 of 4 right
    for is_logits, outputs in ((True, logits), (False, torch.softmax(logits, 1))):
        m = Accuracy(is_logits=is_logits)
        m.update(outputs, labels)
        assert m.accumulate() == 0.75


def test_accumulates_over_batches_of_different_sizes_and_resets():
    m = Accuracy()
    m.update(torch.tensor([[1.0, 0.0]] * 3), torch.tensor([0, 0, 1]))      # 2 / 3
    m.update(torch.tensor([[0.0, 1.0]]), torch.tensor([[1]]))              # 1 / 1, labels [B,1]
    assert m.accumulate() == pytest.approx(3 / 4)                        # per sample, not per batch
    m.reset()
    assert m.accumulate() == 0.0                                         # the lab: 0 when empty


def test_binary_single_column_thresholds():
    labels = torch.tensor([[1], [0], [1], [0]])
    logits = torch.tensor([[0.0], [-0.1], [-2.0], [3.0]])   # >= 0 -> 1: [1,0,0,1] -> 2 right
    m = Accuracy(is_logits=True)
    m.update(logits, labels)
    assert m.accumulate() == 0.5
    probs = torch.tensor([[0.5], [0.49], [0.9], [0.2]])     # >= 0.5 -> 1: [1,0,1,0] -> 4 right
    m = Accuracy(is_logits=False)
    m.update(probs, labels)
    assert m.accumulate() == 1.0
    m = Accuracy(is_logits=False)
    m.update(torch.tensor([0.7, 0.1]), torch.tensor([1, 1]))  # 1-d outputs: one column
    assert m.accumulate() == 0.5


def test_mismatched_lengths_raise():
    with pytest.raises(ValueError):
        Accuracy().update(torch.zeros(3, 2), torch.zeros(2, dtype=torch.long))


def test_plot_writes_a_png_from_a_history_dict(tmp_path):
    history = {"train_step_losses": [[s, 2.3 - 0.02 * s] for s in range(80)],
               "dev_losses": [[s, 2.0 - 0.01 * s] for s in (15, 30, 45, 60, 75, 79)],
               "dev_scores": [[s, 0.3 + 0.005 * s] for s in (15, 30, 45, 60, 75, 79)]}
    path = plot_training_loss_acc(history, tmp_path / "sub" / "curves.png")
    data = path.read_bytes()
    assert data.startswith(PNG) and len(data) > 10_000
    # without dev evaluations: only the loss panel, still a figure
    path2 = plot_training_loss_acc({"train_step_losses": history["train_step_losses"]},
                                   tmp_path / "c2.png")
    assert path2.read_bytes().startswith(PNG)


def test_plot_accepts_a_runner(tmp_path):
    import torch.nn.functional as F
    from torch import nn

    from cnnlab.train.runner import Runner

    model = nn.Linear(2, 2)
    r = Runner(model, torch.optim.SGD(model.parameters(), lr=0.1), F.cross_entropy, Accuracy(),
               device="cpu", progress=False, log=False)
    r.train_step_losses = [(0, 1.0), (1, 0.5)]
    r.dev_losses, r.dev_scores = [(1, 0.7)], [(1, 0.5)]
    assert plot_training_loss_acc(r, tmp_path / "r.png").read_bytes().startswith(PNG)
