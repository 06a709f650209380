"""The part-2 report's figures: the confusion matrix of a recipe's best model on the test set,
and a grid of test images with their true and predicted class names.

Drawn on bare matplotlib Figures (Agg, no display), written atomically (`write_figure`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cnnlab.atomic import write_figure


def confusion_matrix(labels, preds, classes: int = 10) -> np.ndarray:
    """int64 [classes, classes]: row = true class, column = predicted class."""
    matrix = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(labels), np.asarray(preds)), 1)
    return matrix


def save_confusion_figure(matrix: np.ndarray, names, title: str, path) -> Path:
    """The matrix as a heat map with its counts, rows = true class, columns = predicted."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 6.5))
    ax = fig.add_subplot(1, 1, 1)
    image = ax.imshow(matrix, cmap="Blues")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    ticks = range(len(names))
    ax.set_xticks(ticks, labels=names, rotation=45, ha="right")
    ax.set_yticks(ticks, labels=names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title)
    high = matrix.max() / 2 if matrix.size else 0
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            ax.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=7,
                    color="white" if matrix[i, j] > high else "black")
    fig.tight_layout()
    return write_figure(path, fig, dpi=100)


def save_sample_grid(images, labels, preds, names, title: str, path, columns: int = 8) -> Path:
    """uint8 images [N,3,32,32] in a grid, each titled "true / predicted" (red when wrong)."""
    from matplotlib.figure import Figure

    images = np.asarray(images)
    n = len(images)
    rows = max(1, -(-n // columns))
    # constrained layout leaves room for each two-line title (tight_layout let them run into the
    # row above: the images keep their aspect ratio)
    fig = Figure(figsize=(1.6 * columns, 2.0 * rows + 0.4), layout="constrained")
    for k in range(n):
        ax = fig.add_subplot(rows, columns, k + 1)
        ax.imshow(images[k].transpose(1, 2, 0))  # [3,32,32] -> [32,32,3] RGB
        true, pred = int(labels[k]), int(preds[k])
        ax.set_title(f"{names[true]}\n{names[pred]}", fontsize=8,
                     color="green" if true == pred else "red")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title + "  (above each: true class / predicted class)", fontsize=10)
    return write_figure(path, fig, dpi=100)
