"""Accuracy (the lab's nndl metric, binary and multi-class) and the training-curves figure."""

import pytest
import torch

from cnnlab.train.metric import Accuracy
from cnnlab.train.plots import plot_training_loss_acc, training_figure

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


def _lines(axes):
    """{legend label: (x data, y data)} of what an axes draws."""
    return {line.get_label(): (list(line.get_xdata()), list(line.get_ydata())) for line in axes.lines}


def test_figure_draws_the_history_as_the_lab_does():
    history = {"train_step_losses": [[s, 2.3 - 0.02 * s] for s in range(80)],
               "dev_losses": [[s, 2.0 - 0.01 * s] for s in (15, 30, 45, 60, 75, 79)],
               "dev_scores": [[s, 0.3 + 0.005 * s] for s in (15, 30, 45, 60, 75, 79)]}
    fig = training_figure(history)
    loss_axes, score_axes = fig.axes
    drawn = _lines(loss_axes)
    # the lab plots every 20th train loss: steps 0, 20, 40, 60
    assert drawn["Train loss"] == ([0, 20, 40, 60], [2.3, 2.3 - 0.4, 2.3 - 0.8, 2.3 - 1.2])
    assert drawn["Dev loss"] == ([15, 30, 45, 60, 75, 79], [2.0 - 0.01 * s for s in (15, 30, 45, 60, 75, 79)])
    assert _lines(score_axes) == {"Dev accuracy": ([15, 30, 45, 60, 75, 79],
                                                   [0.3 + 0.005 * s for s in (15, 30, 45, 60, 75, 79)])}
    assert (loss_axes.get_xlabel(), loss_axes.get_ylabel()) == ("step", "loss")
    assert (score_axes.get_xlabel(), score_axes.get_ylabel()) == ("step", "score")
    assert [t.get_text() for t in loss_axes.get_legend().get_texts()] == ["Train loss", "Dev loss"]
    assert loss_axes.lines[0].get_color() == "#8E004D" and loss_axes.lines[1].get_linestyle() == "--"
    # without dev evaluations: the loss panel alone
    only = training_figure({"train_step_losses": history["train_step_losses"]}, sample_step=1)
    assert len(only.axes) == 1 and list(only.axes[0].lines[0].get_xdata()) == list(range(80))


def test_plot_writes_that_figure_as_a_png(tmp_path):
    from PIL import Image

    history = {"train_step_losses": [[0, 2.0], [1, 1.0]], "dev_scores": [[1, 0.5]]}
    path = plot_training_loss_acc(history, tmp_path / "sub" / "curves.png", fig_size=(4, 3))
    assert path.read_bytes().startswith(PNG)
    assert Image.open(path).size == (400, 300)  # 4 x 3 inches at matplotlib's 100 dpi
    assert [p.name for p in path.parent.iterdir()] == ["curves.png"]  # no temp file left


def test_plot_accepts_a_runner():
    import torch.nn.functional as F
    from torch import nn

    from cnnlab.train.runner import Runner

    model = nn.Linear(2, 2)
    r = Runner(model, torch.optim.SGD(model.parameters(), lr=0.1), F.cross_entropy, Accuracy(),
               device="cpu", progress=False, log=False)
    r.train_step_losses = [(0, 1.0), (1, 0.5)]
    r.dev_losses, r.dev_scores = [(1, 0.7)], [(1, 0.5)]
    loss_axes, score_axes = training_figure(r, sample_step=1).axes
    assert _lines(loss_axes) == {"Train loss": ([0, 1], [1.0, 0.5]), "Dev loss": ([1], [0.7])}
    assert _lines(score_axes) == {"Dev accuracy": ([1], [0.5])}
