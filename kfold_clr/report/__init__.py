"""Rebuild the tables, figures and ``report.md`` of a results directory from its saved files.

``build_report(results_dir)`` reads ``config.yaml`` (through the typed config
loader) and ``folds.csv`` (required), ``history.csv``, ``lr.csv``,
``range_tests.csv`` and ``meta.json`` (when present) and writes
``summary.csv``, ``comparison.csv``, ``predictions.csv`` (from the predictions
saved beside the fold records, `report.predictions`), ``plots/*.png`` and
``report.md`` (its first section, "Answers", from `report.answers`). The saved range tests
(``range_tests/*.json``) give their cost to the summary. Every
file is written atomically. A missing or damaged input raises
`kfold_clr.errors.ResultsError` with one line naming the file. Here: the
steps of `build_report` and what is compared (rope, reference, pairs);
`reading` reads the saved files, `markdown` writes the sections and
`figures` draws the plots.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

import pandas as pd

from kfold_clr.analysis import costs, tables, verdicts
from kfold_clr.config.schema import is_rope
from kfold_clr.errors import ConfigError, ResultsError
from kfold_clr.report import markdown
from kfold_clr.report.answers import answers_section
from kfold_clr.report.figures import draw_plots
from kfold_clr.report.markdown import key_comparison_markdown, markdown_table
from kfold_clr.report.predictions import draw_prediction_plots, image_folder, predictions_section, write_predictions
from kfold_clr.report.reading import one_line, read_results
from kfold_clr.storage import ownership
from kfold_clr.storage.ownership import atomic_write_text
from kfold_clr.storage.store import write_csv

if TYPE_CHECKING:
    import pathlib
    from collections.abc import Sequence

    from kfold_clr.config import CompareConfig
    from kfold_clr.report.reading import SavedResults

__all__ = ["build_report", "markdown_table", "key_comparison_markdown"]


# ---------------------------------------------------------------- what is compared


@dataclass(frozen=True)
class _Comparing:
    ropes: dict  # metric -> rope (float) or None (no equivalence band), `verdicts.metric_ropes`
    reference: Optional[str]
    pairs: Optional[list]
    reference_note: str  # why a configured reference was set aside, or ""


def _resolve_rope(rope: float | dict[str, float] | None, compare: CompareConfig) -> float | dict[str, float] | None:
    """The argument when given (checked here), else `compare.rope` (checked by the config loader):
    a number (the primary metric's rope) or a mapping of metric to number."""
    if rope is None:
        return compare.rope
    values = rope.values() if isinstance(rope, dict) else [rope]
    for value in values:
        if not is_rope(value):
            raise ConfigError(f"Argument `rope` must be a finite number >= 0 or a mapping of metric names to "
                              f"such numbers. Received: rope={rope!r}")
    return rope


def _resolve_reference(reference: str | None, compare: CompareConfig, order: list[str]) -> tuple[str | None, str]:
    if reference is not None:
        if reference not in order:
            raise ConfigError(f"Argument `reference` must be one of {order}. Received: reference={reference!r}")
        return reference, ""
    configured = compare.reference
    if configured is None:
        return None, ""
    if configured not in order:
        return None, (f"compare.reference={configured!r} has no results here; every pair of strategies "
                      f"is compared instead.")
    return configured, ""


def _configured_pairs(compare: CompareConfig, explicit_reference: bool) -> list[tuple[str, str]] | None:
    """`compare.pairs` of the saved config as (A, B) tuples, unless a reference was asked for."""
    if explicit_reference or not compare.pairs:
        return None
    return [tuple(pair) for pair in compare.pairs]


def _choose_comparison(compare: CompareConfig, order: list[str], rope: float | dict[str, float] | None,
                       reference: str | None, metrics: Sequence[str], primary: str) -> _Comparing:
    ropes = verdicts.metric_ropes(_resolve_rope(rope, compare), metrics, primary)
    explicit_reference = reference is not None
    reference, note = _resolve_reference(reference, compare, order)
    pairs = _configured_pairs(compare, explicit_reference)
    return _Comparing(ropes=ropes, reference=reference, pairs=pairs, reference_note=note)


# ---------------------------------------------------------------- steps


def _status_counts(folds: pd.DataFrame, status: pd.Series, order: Sequence[str]) -> pd.DataFrame:
    """Folds per strategy, one row per name in ``order``: columns ok, diverged, failed and total."""
    counts = pd.crosstab(folds["strategy"].to_numpy(), status.to_numpy())
    total = counts.sum(axis=1)
    counts = counts.reindex(index=order, columns=[tables.OK, tables.DIVERGED, tables.FAILED], fill_value=0)
    return counts.assign(total=total)


def _tables(saved: SavedResults, order: Sequence[str], comparing: _Comparing) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(summary, comparison) of the ok folds; a table the folds cannot give is a ResultsError."""
    try:
        summary = tables.summary_table(saved.folds, saved.metrics, strategies=order,
                                       strategy_configs=saved.config.strategies,
                                       range_tests=saved.range_test_costs)
        comparison = tables.comparison_table(saved.folds, saved.metrics, strategies=order,
                                             reference=comparing.reference, pairs=comparing.pairs,
                                             rope=comparing.ropes)
    except ValueError as error:
        raise ResultsError(f"{saved.folds_path}: {one_line(error)}") from error
    return summary, comparison


def _verdicts_text(primary_rows: pd.DataFrame, reference_note: str) -> str:
    text = "## Verdicts\n\n"
    if reference_note:
        text += reference_note + "\n\n"
    if len(primary_rows):
        return text + "\n".join(f"- {verdicts.verdict_line(row)}{markdown.caution(row)}"
                                for _, row in primary_rows.iterrows()) + "\n"
    return text + "Only one strategy has results; there is nothing to compare.\n"


def _report_text(directory: pathlib.Path, saved: SavedResults, status: pd.Series, order: Sequence[str],
                 comparing: _Comparing, summary: pd.DataFrame, comparison: pd.DataFrame,
                 drawn: Sequence[tuple[str, str]], predictions_text: str = "") -> str:
    config, folds, primary = saved.config, saved.folds, saved.primary
    counts = _status_counts(folds, status, order)
    parts = [f"# {config.name}: k-fold comparison of learning-rate strategies\n",
             f"Rebuilt from `{directory.name}/` by `kfold-clr report`. Primary metric: **{primary}**. "
             f"Only folds with status ok enter means and tests; comparisons are paired on (repeat, fold) "
             f"and use the corrected resampled t-test (Nadeau & Bengio) and the Bayesian correlated "
             f"t-test (Benavoli et al.).\n",
             answers_section(comparison, summary.drop_duplicates("strategy")[["strategy", *costs.COST_COLUMNS]],
                             strategy_configs=config.strategies, strategies=order, folds=folds, status=status,
                             metric=primary, rope=comparing.ropes.get(primary), reference=comparing.reference),
             markdown.settings_section(config, saved.meta, saved.metrics, comparing.ropes, comparing.reference,
                                       comparing.pairs, folds),
             markdown.strategies_section(config, folds, status, counts),
             markdown.flags_section(folds, counts),
             markdown.bounds_section(config, folds, status),
             markdown.tuning_section(config, folds, status)]
    primary_rows = comparison[comparison["metric"] == primary]
    parts.append(_verdicts_text(primary_rows, comparing.reference_note))
    if len(primary_rows):
        parts.append(f"## Key comparisons ({primary})\n\n" + key_comparison_markdown(comparison, primary))
    parts.append("## Summary\n\nValidation scores over ok folds, and what each strategy cost: optimizer updates "
                 "and wall time on training (every fold), range tests and tuning (written to `summary.csv`; a "
                 "shared range test is counted for each strategy it serves). Compare costs in updates: a fold "
                 "trained fused shares its job's wall time with the folds beside it, and its seconds are that "
                 "share."
                 + ("" if config.training.train_scores else " The training rows were not scored "
                    "(`training.train_scores: false`, the default): train mean and gap are n/a; "
                    "`train_scores: true` scores them.")
                 + "\n\n" + markdown.summary_markdown(summary))
    parts.append("## Comparisons\n\nA - B on shared splits (written to `comparison.csv`). "
                 f"Probabilities use a rope of {markdown.ropes_text(comparing.ropes)}; `mde` is the smallest "
                 "difference these splits detect with 80% power, `splits needed` how many splits (whole repeats "
                 "of k folds) would detect the observed one; Wilcoxon is descriptive only.\n\n"
                 + (markdown.comparison_markdown(comparison) if len(comparison) else "No pairs to compare.\n"))
    parts.append(predictions_text)
    if drawn:
        parts.append("## Figures\n\n" + "\n".join(f"### {title}\n\n![{title}]({link})\n" for title, link in drawn))
    return "\n".join(part for part in parts if part)


# ---------------------------------------------------------------- entry point


def build_report(results_dir: pathlib.Path | str, *, rope: float | dict[str, float] | None = None,
                 reference: str | None = None) -> pathlib.Path:
    """Rebuild summary, comparison, plots and ``report.md`` from a saved results directory.

    Reads ``config.yaml`` and ``folds.csv`` (and ``history.csv``, ``lr.csv``,
    ``range_tests.csv``, ``range_tests/*.json``, ``meta.json`` when present). Writes,
    atomically: ``summary.csv`` (`tables.summary_table`, with each strategy's cost
    from `costs.cost_table`), ``comparison.csv`` (`tables.comparison_table`),
    ``predictions.csv`` (every validation row's prediction, from the payloads saved
    beside the fold records), ``plots/*.png`` and ``report.md``: first the answers to the practitioners'
    questions on the primary metric (the first of ``training.metrics``, else
    "loss"), then the settings, both tables, the verdicts, the figures and flags
    for leaky or optimistic rows.

    Args:
        results_dir: str or path-like. A directory written by ``kfold-clr run``.
        rope: float, mapping or None. Region of practical equivalence in metric units:
            a number for the primary metric, or a mapping of metric to number; default
            ``compare.rope`` from the config (other metrics: `verdicts.metric_ropes`).
        reference: str or None. Compare each strategy against this one only;
            default ``compare.reference`` from the config, else ``compare.pairs``,
            else every pair.

    Returns:
        pathlib.Path of ``report.md``.

    Raises:
        ResultsError: the directory does not exist, lacks config.yaml or
            folds.csv, a file is unparseable or lacks required columns, or
            config.yaml is refused by the config loader.
        ConfigError: ``rope`` or ``reference`` is invalid.

    Example:

    ```python
    path = build_report("results/digits-clr")
    print(path.read_text())
    ```
    """
    directory = ownership.require_claimed(results_dir)
    saved = read_results(directory)
    order = tables.strategy_order(saved.folds, list(saved.config.strategies))
    comparing = _choose_comparison(saved.config.compare, order, rope, reference, saved.metrics, saved.primary)
    status = tables.fold_status(saved.folds)
    predictions = write_predictions(directory, order)
    summary, comparison = _tables(saved, order, comparing)
    write_csv(ownership.inside(directory, "summary.csv"), summary)
    write_csv(ownership.inside(directory, "comparison.csv"), comparison)
    drawn = draw_plots(directory, saved.folds, status, saved.history, saved.lr, saved.range_tests, order,
                       saved.primary)
    images = image_folder(saved.config, saved.meta)
    predictions_text = predictions_section(
        predictions, draw_prediction_plots(directory, predictions, saved.folds, status, order, images=images),
        config=saved.config, images=images)
    text = _report_text(directory, saved, status, order, comparing, summary, comparison, drawn, predictions_text)
    atomic_write_text(ownership.inside(directory, "report.md"), text)
    return directory / "report.md"
