"""Figures of out-of-fold predictions: a confusion matrix, and a grid of validation images.

Each function takes data (a matrix of counts, image arrays with their captions),
draws on ``ax=None``/``axes=None`` (a new figure when None) and returns the Axes
or Figure. Choosing the rows (`kfold_clr.analysis.predictions`) and reading the
images stay outside.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
import numpy as np

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from numpy.typing import ArrayLike

_MAX_LABELLED_CLASSES = 30  # more tick labels than this overlap
_MAX_ANNOTATED_CLASSES = 20  # more counts than this are unreadable in their cells
_CAPTION_LINES, _CAPTION_CHARS = 2, 44  # what a grid panel's caption room holds at 8 points


def plot_confusion_matrix(matrix: ArrayLike, labels: Sequence[object], *, title: str | None = None,
                          ax: Axes | None = None) -> Axes:
    """Counts of true class (rows) against predicted class (columns), darker for more.

    Args:
        matrix: array (n_classes, n_classes) of counts, e.g. `analysis.predictions.confusion`.
        labels: list of str. Class labels in the order of the rows.
        title: str or None. Axes title.
        ax: matplotlib Axes or None. Where to draw; a new figure when None.

    Returns:
        matplotlib Axes.
    """
    from sklearn.metrics import ConfusionMatrixDisplay

    matrix = np.asarray(matrix)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] != len(labels):
        raise ValueError(f"Argument `matrix` must be square with one row per label ({len(labels)}). "
                         f"Received: shape {matrix.shape}")
    n = len(labels)
    if ax is None:
        side = min(12.0, 2.5 + 0.45 * n)
        _, ax = plt.subplots(figsize=(side, side))
    display = ConfusionMatrixDisplay(matrix, display_labels=[str(label) for label in labels])
    display.plot(ax=ax, cmap="Blues", colorbar=False, include_values=n <= _MAX_ANNOTATED_CLASSES,
                 xticks_rotation="vertical" if n > 8 else "horizontal")
    if n > _MAX_LABELLED_CLASSES:
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        ax.set_title(title)
    return ax


def plot_image_grid(images: Iterable[np.ndarray | None], captions: Sequence[str], *, ncols: int = 4,
                    axes: Sequence[Axes] | np.ndarray | None = None) -> Figure:
    """Images in a grid, each with its caption; None in `images` leaves a panel saying "not readable".

    Images are drawn one at a time as `images` yields them, so a generator keeps one in memory
    besides the figure's own copies.

    Args:
        images: iterable of arrays (height, width[, channels]) or None, one per caption.
        captions: list of str. The text above each image: up to two lines of 44 characters
            (a longer line is cut in its middle).
        ncols: int. Panels per row.
        axes: sequence of matplotlib Axes or None. At least one per caption; a new figure when None.

    Returns:
        matplotlib Figure.
    """
    n = len(captions)
    if axes is None:
        fig, axes = _grid_figure(n, ncols)
    else:
        axes = list(np.ravel(axes))
        if len(axes) < n:
            raise ValueError(f"Argument `axes` must hold at least {n} Axes. Received: {len(axes)} Axes")
        fig = axes[0].figure
    for ax in axes:
        ax.set_axis_off()
    for ax, image, caption in zip(axes, images, captions):
        if image is None:
            ax.text(0.5, 0.5, "not readable", ha="center", va="center", color="0.4", transform=ax.transAxes)
        else:
            ax.imshow(image, cmap="gray" if np.ndim(image) == 2 else None)
        ax.set_title(_fitted(caption), fontsize=8)
    return fig


def _fitted(caption: str) -> str:
    """`caption` cut to what a panel holds: its first `_CAPTION_LINES` lines, each at most
    `_CAPTION_CHARS` characters (a longer one keeps its start and end around an ellipsis)."""
    half = (_CAPTION_CHARS - 1) // 2
    return "\n".join(line if len(line) <= _CAPTION_CHARS else f"{line[:half]}\u2026{line[-half:]}"
                     for line in str(caption).splitlines()[:_CAPTION_LINES])


def _grid_figure(n: int, ncols: int) -> tuple[Figure, list[Axes]]:
    """A figure of `n` square panels, `ncols` a row, each with room above for a two-line caption.

    The layout is fixed in inches, so saving it needs no `tight_layout` pass (a draw of every panel).
    """
    ncols = max(1, min(ncols, n))
    nrows = max(1, math.ceil(n / ncols))
    panel, caption, margin = 2.48, 0.42, 0.05  # inches
    height = nrows * (panel + caption) + margin
    fig, grid = plt.subplots(nrows, ncols, figsize=(2.6 * ncols, height), squeeze=False,
                             gridspec_kw={"left": 0.01, "right": 0.99, "bottom": margin / height,
                                          "top": 1 - caption / height, "wspace": 0.06, "hspace": caption / panel})
    return fig, list(grid.ravel())
