"""Figure of an LR range test: the monitored quantity against the learning rate."""

from __future__ import annotations

from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
import numpy as np

from kfold_clr.analysis.stats import higher_is_better
from kfold_clr.plots.saving import save_figure

if TYPE_CHECKING:
    import os

    import pandas as pd
    from matplotlib.axes import Axes

    from kfold_clr.range_test.suggest import Suggestion


def never_turned_up_title(top_lr: float, next_max_lr: float) -> str:
    """The figure-title line of a range test whose curve never turned up."""
    return f"never turned up by lr={top_lr:.3g}: try max_lr={next_max_lr:.3g}"


def plot_range_test(history: pd.DataFrame, *, monitor: str = "loss", suggestion: Suggestion | None = None,
                    ax: Axes | None = None) -> Axes:
    """Draws a range-test curve on a log-LR axis, with the suggested bounds shaded.

    Raw values are drawn faint and smoothed values (`smoothed_<monitor>`) bold;
    a holdout quantity, evaluated at a few iterations, is drawn as points.
    Rows with `used=False` (after divergence) are greyed and the divergence
    marked with a dashed line.

    Args:
        history: pandas DataFrame. `RangeTestResult.history`: `lr`, the
            monitored column, optionally `smoothed_<monitor>` and `used`.
        monitor: String. Column to draw.
        suggestion: `Suggestion` or None. Bounds to shade and label.
        ax: matplotlib Axes or None. Where to draw; a new figure when None.

    Returns:
        The matplotlib Axes.
    """
    if monitor not in history.columns:
        raise ValueError(f"Argument `monitor` must be a column of `history`. Received: monitor={monitor!r}")
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4))
    lrs = history["lr"].to_numpy(dtype="float64")
    used = history["used"].to_numpy(dtype=bool) if "used" in history.columns else np.ones(len(lrs), bool)
    raw = history[monitor].to_numpy(dtype="float64")
    smoothed_column = f"smoothed_{monitor}"
    if smoothed_column in history.columns:
        ax.plot(lrs[used], raw[used], color="C0", alpha=0.3, linewidth=1, label=f"{monitor} (raw)")
        ax.plot(lrs[used], history[smoothed_column].to_numpy(dtype="float64")[used], color="C0", linewidth=2.2,
                label=f"{monitor} (smoothed)")
        if not used.all():
            ax.plot(lrs[~used], raw[~used], color="0.6", alpha=0.5, linewidth=1, label="after divergence")
    else:
        keep = np.isfinite(raw)
        ax.plot(lrs[keep & used], raw[keep & used], "o-", color="C1", linewidth=2, markersize=4, label=monitor)
        if (keep & ~used).any():
            ax.plot(lrs[keep & ~used], raw[keep & ~used], "o", color="0.6", label="after divergence")
    if not used.all():
        ax.axvline(lrs[~used][0], color="C3", linestyle="--", linewidth=1, label=f"diverged at {lrs[~used][0]:.2g}")
    if suggestion is not None:
        ax.axvspan(suggestion.base_lr, suggestion.max_lr, color="C2", alpha=0.15,
                   label=f"{suggestion.method}: {suggestion.base_lr:.2g} to {suggestion.max_lr:.2g}")
        for lr, text in ((suggestion.base_lr, "base_lr"), (suggestion.max_lr, "max_lr")):
            ax.axvline(lr, color="C2", linewidth=1)
            ax.annotate(f"{text}\n{lr:.2g}", xy=(lr, 1.0), xycoords=("data", "axes fraction"), xytext=(2, -2),
                        textcoords="offset points", va="top", fontsize=8, color="C2")
    finite = raw[used & np.isfinite(raw)]
    if len(finite) > 1:  # keep the improving part readable when the end of the curve runs away
        if higher_is_better(monitor):
            low, high = np.percentile(finite, 5), np.max(finite)
        else:
            low, high = np.min(finite), np.percentile(finite, 95)
        pad = 0.1 * (high - low) or 0.1 * abs(high) or 1.0
        ax.set_ylim(low - pad, high + pad)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel(monitor)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return ax


def save_range_test_plot(history: pd.DataFrame, path: os.PathLike | str, *, monitor: str = "loss",
                         suggestion: Suggestion | None = None, title: str | None = None) -> os.PathLike | str:
    """Draws `plot_range_test` on a new figure, writes it to `path` and closes the figure.

    Args:
        history: pandas DataFrame. As for `plot_range_test`.
        path: Path. Image file to write (format from the extension).
        monitor: String. Column to draw.
        suggestion: `Suggestion` or None. Bounds to shade.
        title: String or None. Title of the figure.

    Returns:
        The path.
    """
    fig, ax = plt.subplots(figsize=(7, 4))
    try:
        plot_range_test(history, monitor=monitor, suggestion=suggestion, ax=ax)
        if title:
            ax.set_title(title, fontsize=8)
    except BaseException:
        plt.close(fig)
        raise
    save_figure(fig, path, dpi=120, bbox_inches="tight")
    return path

