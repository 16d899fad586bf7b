"""Progress display for long runs: strategy, repeat, fold, epoch, LR, metrics, time left.

Verbosity 0 prints nothing, 1 shows a progress bar and one line per finished
fold, 2 adds one line per epoch.
"""

import math

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)


def _fmt(value):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "nan"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


class RunProgress:
    """Context manager that reports epochs and folds of a whole experiment.

    Args:
        total_epochs: int. Epochs to train in this run (folds to do × epochs).
        verbosity: int. 0 quiet, 1 normal, 2 verbose.
    """

    def __init__(self, total_epochs, *, verbosity=1):
        self.verbosity = verbosity
        self.console = Console(stderr=True)
        self._progress = None
        self._total = max(int(total_epochs), 1)
        self._reported = {}  # (strategy, split key) -> epochs reported so far

    def __enter__(self):
        if self.verbosity >= 1:
            self._progress = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("epochs"), TimeElapsedColumn(), TextColumn("left"), TimeRemainingColumn(),
                console=self.console, transient=True)
            self._progress.__enter__()
            self._task = self._progress.add_task("starting", total=self._total)
        return self

    def __exit__(self, *exc):
        if self._progress is not None:
            self._progress.__exit__(*exc)

    def log(self, message):
        if self.verbosity >= 1:
            self.console.print(message, markup=False, highlight=False)

    def warn(self, message):
        """Print `message` whatever the verbosity (a fault the user should know about)."""
        self.console.print(f"kfold-clr: warning: {message}", markup=False, highlight=False, soft_wrap=True)

    def epoch_done(self, plan, epoch, logs):
        """Report an epoch of a fold (the trainers' progress signature; logs carry the epoch's `lr`)."""
        self._reported[plan.strategy, plan.key] = self._reported.get((plan.strategy, plan.key), 0) + 1
        scores = " ".join(f"{name}={_fmt(value)}" for name, value in logs.items() if name != "learning_rate")
        line = f"{plan.strategy} r{plan.split.repeat} f{plan.split.fold} epoch {epoch}/{plan.epochs} {scores}"
        if self._progress is not None:
            self._progress.update(self._task, advance=1, description=line[:90])
        if self.verbosity >= 2:
            self.console.print(line, markup=False, highlight=False)

    def fold_done(self, plan, row):
        """Log the fold; the bar takes the epochs not reported one by one (other executors,
        early stopping, divergence, failures)."""
        rest = plan.epochs - self._reported.pop((plan.strategy, plan.key), 0)
        if self._progress is not None and rest > 0:
            self._progress.update(self._task, advance=rest)
        scores = " ".join(f"{key}={_fmt(value)}" for key, value in row.items()
                          if key.startswith("val_") and value is not None)
        status = row.get("status", "ok")
        extra = f" ({row.get('error')})" if status == "failed" else ""
        line = (f"{plan.strategy:>16} r{plan.split.repeat} f{plan.split.fold}: {status}{extra} "
                f"{scores} [{_fmt(row.get('fit_seconds'))} s]")
        if status == "failed":  # an error reaches the log even when quiet
            self.warn(line.strip())
        else:
            self.log(line)
