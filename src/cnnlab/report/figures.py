"""The report's own figures: the edge-detection pair (lab 5.1.7) and the prediction demo (5.3.5).

Drawn on a bare matplotlib `Figure` (Agg canvas): no pyplot state, no display needed; written
atomically. The training curves come from `cnnlab.train.plots.plot_training_loss_acc`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cnnlab.atomic import write_figure


def _figure(size):
    from matplotlib.figure import Figure

    return Figure(figsize=size)


def save_edges_figure(image: np.ndarray, edges: np.ndarray, path) -> Path:
    """Two panels as the lab draws them: 'input image' and 'output feature map' (grey)."""
    fig = _figure((8, 4))
    for i, (data, title) in enumerate([(image, "input image"),
                                       (np.squeeze(edges), "output feature map")]):
        ax = fig.add_subplot(1, 2, i + 1)
        ax.imshow(data, cmap="gray")
        ax.set_title(title, fontsize=15)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return write_figure(path, fig, dpi=80)


def save_prediction_figure(raw: np.ndarray, true: int, pred: int, prob: float, path) -> Path:
    """The 28x28 digit with its true and predicted class (the lab's 2x2-inch picture)."""
    fig = _figure((2.4, 2.6))
    ax = fig.add_subplot(1, 1, 1)
    ax.imshow(np.asarray(raw).reshape(28, 28), cmap="gray")
    colour = "green" if pred == true else "red"
    ax.set_title(f"true {true}, predicted {pred}\np = {prob:.3f}", fontsize=10, color=colour)
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    return write_figure(path, fig, dpi=100)
