"""What a run produced: `Results`, the DataFrames of a results directory, and `load_results`.

`run_experiment`, `cross_validate` and `load_results` all return a `Results`::

    results = kfold_clr.load_results("results/digits-clr")
    results                              # Results('results/digits-clr': 7 strategies, 105 folds)
    results.scores("accuracy")           # strategy x (repeat, fold) validation scores
    results.comparison                   # one row per pair and metric, as comparison.csv
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import TYPE_CHECKING

import pandas as pd

from kfold_clr.analysis.tables import SNAPSHOT_SUFFIX, fold_status
from kfold_clr.errors import ResultsError

if TYPE_CHECKING:
    from collections.abc import Sequence

    import numpy as np
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

PLOT_KINDS = ("fold_scores", "learning_curves", "lr")


def read_csv(path: pathlib.Path | str) -> pd.DataFrame | None:
    """The CSV file at `path` as a DataFrame, or None when there is none."""
    path = pathlib.Path(path)
    return pd.read_csv(path) if path.exists() else None


@dataclasses.dataclass(repr=False)
class Results:
    """What a run produced, as DataFrames, plus where it lives on disk.

    Attributes:
        directory: pathlib.Path. The results directory.
        folds: DataFrame. `folds.csv`: one row per strategy x repeat x fold.
        history: DataFrame. `history.csv`: one row per strategy x repeat x fold x epoch.
        summary: DataFrame or None. `summary.csv`: one row per strategy x metric.
        comparison: DataFrame or None. `comparison.csv`: one row per strategy pair x metric.
    """

    directory: pathlib.Path
    folds: pd.DataFrame
    history: pd.DataFrame
    summary: pd.DataFrame | None = None
    comparison: pd.DataFrame | None = None

    def __repr__(self) -> str:
        strategies = self.folds["strategy"].nunique() if "strategy" in self.folds else 0
        failed = f", {self.n_failed} failed" if self.n_failed else ""
        folds = len(self.folds)
        return (f"Results({str(self.directory)!r}: {strategies} {'strategy' if strategies == 1 else 'strategies'}, "
                f"{folds} {'fold' if folds == 1 else 'folds'}{failed})")

    @property
    def n_failed(self) -> int:
        """How many folds failed (raised an error); diverged folds are data, not failures."""
        if self.folds.empty or "status" not in self.folds:
            return 0
        return int((self.folds["status"] == "failed").sum())

    @property
    def metrics(self) -> list[str]:
        """The metrics scored on the validation folds, e.g. ["accuracy", "loss"]."""
        return [column[len("val_"):] for column in self.folds.columns if column.startswith("val_")]

    @property
    def predictions(self) -> pd.DataFrame | None:
        """`predictions.csv` as a DataFrame, or None where the run wrote no predictions."""
        return read_csv(self.directory / "predictions.csv")

    def scores(self, metric: str | None = None) -> pd.DataFrame:
        """Validation scores as a strategy x (repeat, fold) table: the numbers every comparison pairs.

        Args:
            metric: str or None. A metric of `metrics` (e.g. "accuracy", "loss"); default the
                summary's primary metric.

        Returns:
            DataFrame with one row per strategy (and "NAME[snapshots]" for a snapshot
            ensemble's scores) and a (repeat, fold) column MultiIndex; folds that diverged
            or failed are NaN, as the statistics leave them out.
        """
        metric = self._metric(metric)
        ok = (fold_status(self.folds) == "ok").to_numpy()
        rows = []
        for column, suffix in ((f"val_{metric}", ""), (f"snapshot_val_{metric}", SNAPSHOT_SUFFIX)):
            if column not in self.folds:
                continue
            values = pd.to_numeric(self.folds[column], errors="coerce").where(ok)
            frame = self.folds[["strategy", "repeat", "fold"]].assign(score=values)
            if suffix:
                frame = frame[frame["strategy"].isin(frame.loc[frame["score"].notna(), "strategy"])]
                frame = frame.assign(strategy=frame["strategy"].astype(str) + suffix)
            rows.append(frame)
        scores = pd.concat(rows)
        table = scores.pivot_table(index="strategy", columns=["repeat", "fold"], values="score",
                                   aggfunc="first", dropna=False, sort=False)
        order = list(dict.fromkeys(scores["strategy"].astype(str)))
        return table.reindex(order)

    def _metric(self, metric: str | None) -> str:
        if metric is None:
            if self.summary is not None and len(self.summary):
                return str(self.summary["metric"].iloc[0])
            if not self.metrics:
                raise ValueError(f"{self.directory}: no validation scores in folds.csv (every fold failed?)")
            return self.metrics[0]
        if metric not in self.metrics:
            raise ValueError(f"Argument `metric` must be one of {', '.join(self.metrics)}. "
                             f"Received: metric={metric!r}")
        return metric

    def report(self) -> str:
        """The text of ``report.md`` (Markdown), as the run wrote it."""
        path = self.directory / "report.md"
        if not path.is_file():
            raise ResultsError(f"{path}: no report here (the run wrote none: every fold failed?)")
        return path.read_text(encoding="utf-8")

    def plot(self, kind: str = "fold_scores", metric: str | None = None, *,
             ax: Axes | Sequence[Axes] | np.ndarray | None = None) -> Axes | Figure:
        """Draw one of the report's figures: its matplotlib Axes ("fold_scores") or Figure (the others).

        Args:
            kind: str. "fold_scores" (validation score per fold, lines join a split),
                "learning_curves" (per epoch, mean and spread over folds) or "lr" (the LR applied).
            metric: str or None. The metric; default the first of the summary.
            ax: matplotlib Axes or None (for "learning_curves" and "lr": an array of Axes).
        """
        if kind not in PLOT_KINDS:
            raise ValueError(f"Argument `kind` must be one of {', '.join(PLOT_KINDS)}. Received: kind={kind!r}")
        from kfold_clr.plots import experiment as figures

        strategies = list(dict.fromkeys(self.folds["strategy"].astype(str)))
        if kind == "lr":
            return figures.plot_lr_trace(pd.read_csv(self.directory / "lr.csv"), strategies=strategies, axes=ax)
        metric = self._metric(metric)
        if kind == "fold_scores":
            return figures.plot_fold_scores(self.folds, metric, strategies=strategies, ax=ax)
        return figures.plot_learning_curves(self.history, metric, strategies=strategies, axes=ax)

    def _repr_html_(self) -> str:
        """The key comparisons and the summary as HTML tables (Jupyter shows this)."""
        parts = [(f"<p><b>kfold_clr results</b> in <code>{self.directory}</code>: {len(self.folds)} folds"
                  f"{f', {self.n_failed} failed' if self.n_failed else ''}</p>")]
        if self.comparison is not None and len(self.comparison):
            primary = self.comparison["metric"].iloc[0]
            columns = ["a", "b", "mean_diff", "ci95_low", "ci95_high", "p_holm", "prob_a_better",
                       "prob_equivalent", "prob_b_better", "verdict", "caution"]
            table = self.comparison[self.comparison["metric"] == primary]
            parts.append(f"<p>Comparisons ({primary}, A - B)</p>"
                         + table[[c for c in columns if c in table]].to_html(index=False, float_format="%.4g"))
        if self.summary is not None:
            parts.append("<p>Summary</p>" + self.summary[["strategy", "metric", "mean", "std", "ci95_low",
                                                           "ci95_high", "n"]].to_html(index=False, float_format="%.4g"))
        return "\n".join(parts)


def load_results(directory: pathlib.Path | str) -> Results:
    """Load a results directory written by `run_experiment` (or `cross_validate`, or `kfold-clr run`).

    Args:
        directory: str or path. The results directory, e.g. "results/digits-clr".

    Returns:
        Results.
    """
    directory = pathlib.Path(directory)
    if not (directory / "folds.csv").exists():
        raise ResultsError(f"{directory}: no folds.csv here; is it a kfold_clr results directory?")
    try:
        folds = pd.read_csv(directory / "folds.csv")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise ResultsError(f"{directory / 'folds.csv'}: cannot be read ({error})") from None
    history = read_csv(directory / "history.csv")
    return Results(directory, folds, history if history is not None else pd.DataFrame(),
                   read_csv(directory / "summary.csv"), read_csv(directory / "comparison.csv"))
