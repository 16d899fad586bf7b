"""The report's figures, drawn from the saved tables into ``plots/``.

Owns `draw_plots`, which draws the LR trace, the learning curves and the
per-fold scores of the primary metric and of the loss, and the range-test
curves (the shared one, and one overlay for per-fold tests), each saved
atomically under ``plots/`` of the results directory; and `ok_history`, the
epoch history of the folds whose status is ok (the curves leave out diverged
and failed folds). Drawing is `kfold_clr.plots.experiment`'s; this module
chooses what is drawn and names the files.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from kfold_clr.analysis import tables
from kfold_clr.storage import ownership

if TYPE_CHECKING:
    import pathlib
    from collections.abc import Sequence

    import pandas as pd
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


def safe_name(text: object) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(text)).strip("_") or "scope"


def ok_history(history: pd.DataFrame, folds: pd.DataFrame, status: pd.Series) -> pd.DataFrame:
    """The rows of `history` of folds whose status is ok."""
    ok_keys = folds.loc[(status == tables.OK).to_numpy(), ["strategy", *tables.KEY]].astype({"strategy": str})
    history = history.astype({"strategy": str})
    return history.merge(ok_keys.drop_duplicates(), on=["strategy", *tables.KEY], how="inner")


def draw_plots(directory: pathlib.Path, folds: pd.DataFrame, status: pd.Series, history: pd.DataFrame | None,
               lr: pd.DataFrame | None, range_tests: pd.DataFrame | None, order: Sequence[str],
               primary: str) -> list[tuple[str, str]]:
    """Draw every figure into ``directory/plots``; returns [(title, relative path)]."""
    from kfold_clr.plots import experiment as figures

    drawn = []

    def save(figure: Figure | Axes, name: str, title: str) -> None:
        figures.save_figure(figure, ownership.inside(directory, "plots", name))
        drawn.append((title, f"plots/{name}"))

    if lr is not None and len(lr):
        save(figures.plot_lr_trace(lr, strategies=order), "lr_trace.png",
             "Learning rate applied, folds one after another")
    curve_metrics = list(dict.fromkeys([primary, "loss"]))
    if history is not None and len(history):
        curves = ok_history(history, folds, status)
        for metric in curve_metrics:
            if f"val_{metric}" in curves.columns and len(curves):
                save(figures.plot_learning_curves(curves, metric, strategies=order),
                     f"learning_curves_{safe_name(metric)}.png", f"Learning curves ({metric})")
    for metric in curve_metrics:
        if f"val_{metric}" in folds.columns:
            save(figures.plot_fold_scores(folds.assign(status=status), metric, strategies=order),
                 f"fold_scores_{safe_name(metric)}.png", f"Validation {metric} per fold")
    if range_tests is not None and len(range_tests):
        scopes = range_tests["scope"].astype(str)
        per_fold = range_tests[scopes != "shared"]
        if scopes.eq("shared").any():
            save(figures.plot_range_test_scope(range_tests[scopes == "shared"]), "range_test_shared.png",
                 "LR range test (shared)")
        if per_fold["scope"].nunique() > 1:  # one figure for all folds, not one each
            save(figures.plot_range_tests_per_fold(per_fold), "range_tests_per_fold.png",
                 "LR range tests, one per fold")
        else:
            for scope, frame in per_fold.groupby("scope", sort=False):
                save(figures.plot_range_test_scope(frame), f"range_test_{safe_name(scope)}.png",
                     f"LR range test ({scope})")
    return drawn
