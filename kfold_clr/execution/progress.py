"""Progress display for long runs: strategy, repeat, fold, epoch, LR, metrics, time left.

Verbosity 0 prints only warnings and the summary at the end, 1 shows a progress
bar and one line per finished fold, 2 adds one line per epoch. The live line keeps
its count and time left visible at 80 columns; every run, and every rerun that
found the work done, ends with `run_summary`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Column

if TYPE_CHECKING:
    from kfold_clr.results import Results
    from kfold_clr.training.fold_plans import FoldPlan

DESCRIPTION_WIDTH = 28


def _shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[:width - 1] + "…"


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "nan"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


class RunProgress:
    """Context manager that reports epochs and folds of a whole experiment.

    Args:
        total_epochs: int. Epochs to train in this run (folds to do × epochs).
        verbosity: int. 0 quiet, 1 normal, 2 verbose.
    """

    def __init__(self, total_epochs: int, *, verbosity: int = 1) -> None:
        self.verbosity = verbosity
        self.console = Console(stderr=True)
        self._progress = None
        self._total = max(int(total_epochs), 1)
        self._reported = {}  # (strategy, split key) -> epochs reported so far

    def __enter__(self) -> RunProgress:
        if self.verbosity >= 1:
            self._progress = Progress(  # 28 + 20 + about 25 columns: fits 80
                TextColumn("{task.description}", table_column=Column(width=DESCRIPTION_WIDTH, no_wrap=True)),
                BarColumn(bar_width=20),
                MofNCompleteColumn(), TextColumn("epochs"), TimeRemainingColumn(), TextColumn("left"),
                console=self.console, transient=True)
            self._progress.__enter__()
            self._task = self._progress.add_task("starting", total=self._total)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)

    def log(self, message: str) -> None:
        if self.verbosity >= 1:
            self.console.print(message, markup=False, highlight=False)

    def warn(self, message: str) -> None:
        """Print `message` whatever the verbosity (a fault the user should know about)."""
        self.console.print(f"kfold-clr: warning: {message}", markup=False, highlight=False, soft_wrap=True)

    def epoch_done(self, plan: FoldPlan, epoch: int, logs: dict[str, float]) -> None:
        """Report an epoch of a fold (the trainers' progress signature; logs carry the epoch's `lr`)."""
        key = (plan.strategy, plan.key, plan.settings)
        self._reported[key] = self._reported.get(key, 0) + 1
        where = f"{plan.strategy} r{plan.split.repeat} f{plan.split.fold} epoch {epoch}/{plan.epochs}"
        if self._progress is not None:  # the metrics give way, not the count and time left
            self._progress.update(self._task, advance=1, description=_shorten(where, DESCRIPTION_WIDTH))
        if self.verbosity >= 2:
            scores = " ".join(f"{name}={_fmt(value)}" for name, value in logs.items() if name != "learning_rate")
            self.console.print(f"{where} {scores}", markup=False, highlight=False)

    def fold_done(self, plan: FoldPlan, row: dict[str, Any], *, tuning: bool = False) -> None:
        """Log the fold (a grid fit of a tuned strategy only at verbosity 2, or when it failed); the bar
        takes the epochs not reported one by one (other executors, early stopping, divergence, failures)."""
        rest = plan.epochs - self._reported.pop((plan.strategy, plan.key, plan.settings), 0)
        if self._progress is not None and rest > 0:
            self._progress.update(self._task, advance=rest)
        scores = " ".join(f"{key}={_fmt(value)}" for key, value in row.items()
                          if key.startswith("val_") and value is not None)
        status = row.get("status", "ok")
        extra = f" ({row.get('error')})" if status == "failed" else ""
        where = f"{plan.strategy:>16} r{plan.split.repeat} f{plan.split.fold}"
        if tuning:
            where += f" tuning {plan.split.inner or 'outer'} " + " ".join(f"{k}={_fmt(v)}" for k, v in plan.settings)
        line = f"{where}: {status}{extra} {scores} [{_fmt(row.get('fit_seconds'))} s]"
        if status == "failed":  # an error reaches the log even when quiet
            self.warn(line.strip())
        elif not tuning or self.verbosity >= 2:
            self.log(line)


def run_summary(results: Results, *, seconds: float, trained: int) -> str:
    """The lines a run ends with: fold counts, time, where the results are, the key comparisons.

    Args:
        results: Results. What the run left in its directory.
        seconds: float. Wall time of this run.
        trained: int. Folds trained in this run (0 when a rerun found everything done).
    """
    from kfold_clr.analysis.verdicts import format_difference

    folds = results.folds
    status = folds["status"].value_counts() if "status" in folds else {}
    counts = ", ".join(f"{int(status.get(kind, 0))} {kind}" for kind in ("ok", "diverged", "failed"))
    minutes, rest = divmod(int(round(seconds)), 60)
    done = f"trained {trained} in this run" if trained else "all were saved before: nothing to train"
    report = results.directory / "report.md"
    lines = [f"kfold-clr: {len(folds)} folds: {counts} ({done}; {minutes}m {rest:02d}s)",
             f"  results: {results.directory}",
             f"  report:  {report}" if report.is_file() else
             "  report:  none written (see above why); folds.csv has each fold's status and error"]
    comparison = results.comparison
    if comparison is not None and len(comparison):
        metric = comparison["metric"].iloc[0]
        lines.append(f"  key comparisons ({metric}, A - B):")
        for row in comparison[comparison["metric"] == metric].itertuples(index=False):
            caution = getattr(row, "caution", "")
            flag = " (caution)" if isinstance(caution, str) and caution else ""
            pair = _shorten(f"{row.a} vs {row.b}", 36)
            lines.append(f"    {pair:<36} {format_difference(row.mean_diff, metric):>17}  {row.verdict}{flag}")
    return "\n".join(lines)
