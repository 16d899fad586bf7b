"""Figures of a cross-validation experiment: LR traces, learning curves, fold scores, range tests.

Each function takes the data (a DataFrame read from the results directory),
draws on ``ax=None``/``axes=None`` (a new figure when None) and returns the
Axes or Figure. Computation stays outside: filter the rows (e.g. to ok folds)
before calling.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from scipy import stats as _scipy_stats

from kfold_clr.analysis.columns import as_bool
from kfold_clr.analysis.stats import higher_is_better
from kfold_clr.plots.saving import save_figure  # noqa: F401  (the report saves through this module)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

_BANDS = ("std", "t")


def _strategies(frame: pd.DataFrame, strategies: Sequence[str] | None) -> list[str]:
    present = list(pd.unique(frame["strategy"].astype(str)))
    if strategies is None:
        return present
    return [name for name in strategies if name in present]


def _require(frame: pd.DataFrame, columns: Sequence[str], name: str) -> None:
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise ValueError(
            f"Argument `{name}` lacks required column(s) {missing}. Received columns: {list(frame.columns)}"
        )


def _axes_grid(axes: Axes | Sequence[Axes] | np.ndarray | None, n: int, ncols: int = 1, *, width: float = 8.0,
               height: float = 2.2) -> tuple[Figure, list[Axes]]:
    if axes is None:
        nrows = max(1, math.ceil(n / ncols))
        fig, grid = plt.subplots(nrows, ncols, figsize=(width, 0.8 + height * nrows), squeeze=False)
        return fig, list(grid.ravel())
    axes = list(np.ravel(axes))
    if len(axes) < n:
        raise ValueError(f"Argument `axes` must hold at least {n} Axes. Received: {len(axes)} Axes")
    return axes[0].figure, axes


def plot_lr_trace(lr_df: pd.DataFrame, *, strategies: Sequence[str] | None = None,
                  axes: Sequence[Axes] | np.ndarray | None = None) -> Figure:
    """The learning rate actually applied, folds one after another, one panel per strategy.

    Each fold's trace starts where the previous fold's ended on the x axis;
    dotted lines mark fold boundaries and solid lines repeat boundaries. A
    schedule that resets per fold shows the same shape in every fold; one that
    continues across folds shows the cycle running on through the boundaries.

    Args:
        lr_df: DataFrame. Rows of ``lr.csv``: strategy, repeat, fold, iteration, lr.
        strategies: list of str or None. Panels, in order; default: every strategy present.
        axes: sequence of matplotlib Axes or None. One per strategy; a new figure when None.

    Returns:
        matplotlib Figure.
    """
    _require(lr_df, ["strategy", "repeat", "fold", "iteration", "lr"], "lr_df")
    names = _strategies(lr_df, strategies)
    fig, axes = _axes_grid(axes, max(1, len(names)))
    for ax, name in zip(axes, names):
        frame = lr_df[lr_df["strategy"].astype(str) == name].sort_values(["repeat", "fold", "iteration"])
        offset = 0.0
        previous_repeat = None
        for (repeat, _fold), fold_frame in frame.groupby(["repeat", "fold"], sort=True):
            if offset > 0:
                style = "-" if repeat != previous_repeat else ":"
                ax.axvline(offset, color="0.5", linestyle=style, linewidth=0.8)
            iterations = fold_frame["iteration"].to_numpy(dtype=float)
            ax.plot(offset + iterations, fold_frame["lr"].to_numpy(dtype=float), color="C0", linewidth=1.0)
            offset += (iterations.max() + 1) if iterations.size else 0
            previous_repeat = repeat
        values = frame["lr"].to_numpy(dtype=float)
        values = values[np.isfinite(values) & (values > 0)]
        if values.size and values.max() / values.min() > 100:
            ax.set_yscale("log")
        ax.set_title(name, fontsize=10, loc="left")
        ax.set_ylabel("lr")
    for ax in axes[len(names):]:
        ax.set_visible(False)
    if names:
        axes[len(names) - 1].set_xlabel("iteration, folds one after another (dotted: fold, solid: repeat)")
    fig.tight_layout()
    return fig


def _band(values: pd.DataFrame, band: str) -> tuple[pd.Series, pd.Series, pd.Series]:
    n = values.notna().sum(axis=1)
    mean = values.mean(axis=1)
    std = values.std(axis=1, ddof=1)
    if band == "std":
        half = std
    else:
        quantile = pd.Series(_scipy_stats.t.ppf(0.975, np.maximum(n - 1, 1)), index=n.index)
        half = quantile * values.sem(axis=1)
    return mean, mean - half, mean + half


def plot_learning_curves(history_df: pd.DataFrame, metric: str, *, strategies: Sequence[str] | None = None,
                         band: str = "std", axes: Sequence[Axes] | np.ndarray | None = None) -> Figure:
    """Training and validation ``metric`` per epoch: mean over folds with a band, per strategy.

    Two panels: training (left) and validation (right). Non-finite values
    (diverged epochs) are left out of the mean.

    Args:
        history_df: DataFrame. Rows of ``history.csv``: strategy, repeat, fold,
            epoch, <metric>, val_<metric>.
        metric: str. Metric name without prefix, e.g. "accuracy" or "loss".
        strategies: list of str or None. Curves, in order; default: every strategy present.
        band: str. "std" for mean +- 1 standard deviation over folds, "t" for
            the 95% t-interval of the mean.
        axes: pair of matplotlib Axes or None. A new figure when None.

    Returns:
        matplotlib Figure.
    """
    if band not in _BANDS:
        raise ValueError(f"Argument `band` must be one of {list(_BANDS)}. Received: band={band!r}")
    _require(history_df, ["strategy", "repeat", "fold", "epoch", f"val_{metric}"], "history_df")
    fig, axes = _axes_grid(axes, 2, ncols=2, width=10.0, height=3.6)
    panels = [(axes[0], metric, "training"), (axes[1], f"val_{metric}", "validation")]
    for index, name in enumerate(_strategies(history_df, strategies)):
        frame = history_df[history_df["strategy"].astype(str) == name]
        for ax, column, _ in panels:
            if column not in frame.columns:
                continue
            numbers = pd.to_numeric(frame[column], errors="coerce").replace([np.inf, -np.inf], np.nan)
            values = frame.assign(value=numbers)
            table = values.pivot_table(index="epoch", columns=["repeat", "fold"], values="value", dropna=False)
            if table.empty:
                continue
            mean, low, high = _band(table, band)
            color = f"C{index % 10}"
            ax.plot(mean.index, mean.to_numpy(), color=color, label=name)
            ax.fill_between(mean.index, low.to_numpy(), high.to_numpy(), color=color, alpha=0.2, linewidth=0)
    band_text = "mean ± 1 std over folds" if band == "std" else "mean with 95% t-interval"
    for ax, column, title in panels:
        ax.set_title(f"{title} {metric} ({band_text})", fontsize=10)
        ax.set_xlabel("epoch")
        ax.set_ylabel(column)
    if axes[1].get_legend_handles_labels()[0]:
        # A fixed corner away from where the curves end ("best" costs a search over every point).
        corner = "lower right" if higher_is_better(metric) else "upper right"
        axes[1].legend(fontsize=8, loc=corner)
    fig.tight_layout()
    return fig


def plot_fold_scores(folds_df: pd.DataFrame, metric: str, *, strategies: Sequence[str] | None = None,
                     ax: Axes | None = None) -> Axes:
    """Validation ``metric`` of every fold by strategy, points of the same split joined by a line.

    The lines show the pairing the comparison tests use: a strategy that wins
    on most splits has most lines sloping the same way. Strategy means are
    drawn as black bars. Only rows with status "ok" are drawn; the x labels
    say how many folds diverged or failed.

    Args:
        folds_df: DataFrame. Rows of ``folds.csv``: strategy, repeat, fold, status, val_<metric>.
        metric: str. Metric name without prefix.
        strategies: list of str or None. x positions, in order; default: every strategy present.
        ax: matplotlib Axes or None. A new figure when None.

    Returns:
        matplotlib Axes.
    """
    column = f"val_{metric}"
    _require(folds_df, ["strategy", "repeat", "fold", column], "folds_df")
    if ax is None:
        _, ax = plt.subplots(figsize=(max(4.0, 1.6 * len(_strategies(folds_df, strategies)) + 2), 4.0))
    names = _strategies(folds_df, strategies)
    status = (folds_df["status"].astype(str).str.lower() if "status" in folds_df.columns
              else pd.Series("ok", index=folds_df.index))
    ok = folds_df[status == "ok"].assign(score=lambda f: pd.to_numeric(f[column], errors="coerce"))
    table = ok.pivot_table(index=["repeat", "fold"], columns="strategy", values="score")
    table = table.reindex(columns=names)
    x = np.arange(len(names))
    for _, scores in table.iterrows():
        ax.plot(x, scores.to_numpy(dtype=float), color="0.6", linewidth=0.8, marker="o", markersize=3, alpha=0.8)
    means = table.mean(axis=0).to_numpy(dtype=float)
    ax.scatter(x, means, marker="_", s=800, color="black", zorder=3, label="mean over ok folds")
    labels = []
    for name in names:
        own = folds_df["strategy"].astype(str) == name
        bad = {kind: int(((status == kind) & own).sum()) for kind in ("diverged", "failed")}
        extra = ", ".join(f"{count} {kind}" for kind, count in bad.items() if count)
        labels.append(f"{name}\n({extra})" if extra else name)
    ax.set_xticks(x, labels)
    ax.set_xlim(-0.5, len(names) - 0.5)
    ax.set_ylabel(column)
    ax.set_title(f"validation {metric} per fold (lines join the same split)", fontsize=10)
    ax.legend(fontsize=8)
    ax.figure.tight_layout()
    return ax


def plot_range_test_scope(range_df: pd.DataFrame, *, monitor: str = "loss", ax: Axes | None = None) -> Axes:
    """One range test curve (one scope of ``range_tests.csv``) with the bounds chosen shaded.

    Draws with `kfold_clr.plots.range_test.plot_range_test` and shades the
    ``base_lr``..``max_lr`` range recorded in the rows.

    Args:
        range_df: DataFrame. Rows of one scope: lr, loss, smoothed_loss, optionally
            base_lr and max_lr.
        monitor: str. Quantity on the y axis, "loss" or a metric name.
        ax: matplotlib Axes or None. A new figure when None.

    Returns:
        matplotlib Axes.
    """
    _require(range_df, ["lr"], "range_df")
    if ax is None:
        _, ax = plt.subplots(figsize=(6.0, 4.0))
    frame = range_df.sort_values("iteration") if "iteration" in range_df.columns else range_df
    from kfold_clr.plots.range_test import plot_range_test

    plot_range_test(frame, monitor=monitor, ax=ax)
    bounds = [pd.to_numeric(frame[column], errors="coerce").dropna() if column in frame.columns
              else pd.Series(dtype=float) for column in ("base_lr", "max_lr")]
    if all(len(values) for values in bounds):
        low, high = float(bounds[0].iloc[0]), float(bounds[1].iloc[0])
        ax.axvspan(low, high, color="C2", alpha=0.15, label=f"bounds used: {low:.2g} to {high:.2g}")
        ax.legend(fontsize=8)
    scope = str(frame["scope"].iloc[0]) if "scope" in frame.columns and len(frame) else ""
    title = f"LR range test ({scope})" if scope else ""
    next_max = pd.to_numeric(frame["next_max_lr"], errors="coerce").dropna() if "next_max_lr" in frame else []
    if len(next_max):
        from kfold_clr.plots.range_test import never_turned_up_title

        title += "\n" + never_turned_up_title(float(frame["lr"].max()), float(next_max.iloc[0]))
    if title:
        ax.set_title(title.strip(), fontsize=10)
    ax.figure.tight_layout()
    return ax


def plot_range_tests_per_fold(range_df: pd.DataFrame, *, ax: Axes | None = None) -> Axes:
    """Every fold's range test on one axis: smoothed loss against LR, each fold's max_lr marked.

    The answer to "do my folds need different learning rates?" at a glance: curves
    that lie on top of each other, and max_lr marks in a narrow band, say one range
    test would do.

    Args:
        range_df: DataFrame. Rows of ``range_tests.csv`` for the per-fold scopes:
            scope, lr, loss or smoothed_loss, optionally used and max_lr.
        ax: matplotlib Axes or None. A new figure when None.

    Returns:
        matplotlib Axes.
    """
    _require(range_df, ["scope", "lr"], "range_df")
    if ax is None:
        _, ax = plt.subplots(figsize=(6.0, 4.0))
    column = "smoothed_loss" if "smoothed_loss" in range_df.columns else "loss"
    peaks, ends = [], []
    for _, frame in range_df.groupby("scope", sort=False):
        frame = frame.sort_values("iteration") if "iteration" in frame.columns else frame
        used = as_bool(frame["used"]) if "used" in frame.columns else pd.Series(True, index=frame.index)
        lrs, values = frame.loc[used, "lr"].to_numpy(float), frame.loc[used, column].to_numpy(float)
        ax.plot(lrs, values, color="C0", linewidth=1.0, alpha=0.45)
        ends.extend(values[np.isfinite(values)][:1])
        peak = pd.to_numeric(frame["max_lr"], errors="coerce").dropna() if "max_lr" in frame else []
        if len(peak):
            peaks.append(float(peak.iloc[0]))
    if peaks:
        for peak in peaks:
            ax.axvline(peak, color="C2", linewidth=0.8, alpha=0.5)
        ax.axvspan(min(peaks), max(peaks), color="C2", alpha=0.12,
                   label=f"max_lr chosen: {min(peaks):.2g} to {max(peaks):.2g}")
    if ends:  # the start of the curves sets the scale; the blow-up past it is cut
        top = float(np.nanmax(ends))
        ax.set_ylim(bottom=0.0 if top > 0 else None, top=top * 1.3 if top > 0 else None)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel(column.replace("_", " "))
    ax.grid(True, which="both", alpha=0.3)
    n = range_df["scope"].nunique()
    ax.set_title(f"LR range tests, one per fold ({n} folds)", fontsize=10)
    if peaks:
        ax.legend(fontsize=8, loc="lower left")
    ax.figure.tight_layout()
    return ax
