"""The lab's training figure (nndl `plot_training_loss_acc`), drawn headless with matplotlib's Agg.

Left panel: train loss per step (every `sample_step`-th step, as the lab) and dev loss at each
evaluation; right panel: dev accuracy at each evaluation. Colours and line styles are the lab's.
"""

from __future__ import annotations

from pathlib import Path

from cnnlab.atomic import write_figure


def _pairs(items):
    items = [tuple(p) for p in items]
    return [p[0] for p in items], [p[1] for p in items]


def plot_training_loss_acc(history, path, **style) -> Path:
    """`training_figure(history, **style)` written to `path` (atomically) -> path."""
    return write_figure(path, training_figure(history, **style))


def training_figure(history, fig_size=(16, 6), sample_step=20, loss_legend_loc="upper right",
                    acc_legend_loc="lower right", train_color="#8E004D", dev_color="#E20079",
                    fontsize="x-large", train_linestyle="-", dev_linestyle="--", title=None):
    """history: a Runner, or its `history()` dict (train_step_losses [(step, loss)],
    dev_losses [(step, loss)], dev_scores [(step, score)]) -> a matplotlib Figure."""
    from matplotlib.figure import Figure  # Figure + Agg canvas: no pyplot state, no display

    if hasattr(history, "history"):
        history = history.history()
    fig = Figure(figsize=fig_size)
    ax = fig.add_subplot(1, 2, 1)
    steps, losses = _pairs(history.get("train_step_losses", [])[::sample_step])
    ax.plot(steps, losses, color=train_color, linestyle=train_linestyle, label="Train loss")
    if history.get("dev_losses"):
        steps, losses = _pairs(history["dev_losses"])
        ax.plot(steps, losses, color=dev_color, linestyle=dev_linestyle, label="Dev loss")
    ax.set_ylabel("loss", fontsize=fontsize)
    ax.set_xlabel("step", fontsize=fontsize)
    ax.legend(loc=loss_legend_loc, fontsize="x-large")
    if history.get("dev_scores"):
        ax = fig.add_subplot(1, 2, 2)
        steps, scores = _pairs(history["dev_scores"])
        ax.plot(steps, scores, color=dev_color, linestyle=dev_linestyle, label="Dev accuracy")
        ax.set_ylabel("score", fontsize=fontsize)
        ax.set_xlabel("step", fontsize=fontsize)
        ax.legend(loc=acc_legend_loc, fontsize="x-large")
    if title:
        fig.suptitle(title, fontsize=fontsize)
    return fig
