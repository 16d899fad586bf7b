"""Which comparisons of a run answer the practitioners' questions, read from the strategies' settings.

The questions (SPEC, "What the user does"):

| key | question | side A | side B |
| --- | --- | --- | --- |
| ``reset_or_continue`` | reset the CLR in every fold, or continue it across folds? | clr, ``across_folds: reset`` | clr, ``across_folds: continue`` |
| ``shared_or_per_fold`` | can one range test serve every fold? | ``bounds: shared_range_test`` | ``bounds: per_fold_range_test`` |
| ``clr_or_baseline`` | does CLR beat a baseline schedule (tuned or not)? | ``schedule: clr`` | any other schedule |
| ``snapshots_or_final`` | does the snapshot ensemble beat the final model? | ``NAME[snapshots]`` | ``NAME`` |

A question is answered by the rows of the comparison table (what the run compared:
``compare.pairs``, a reference, or every pair) whose two strategies take its two
sides; each row is turned so that side A is the question's first option. Where
some rows compare strategies that differ only in the question's own settings
(e.g. only in ``across_folds``), only those are kept; otherwise every row is kept
with the settings that also differ (``confounds``). A question whose strategies
ran but were not compared lists the pairs that would answer it (``uncompared``);
a question whose strategies are absent says what is missing (``missing``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pandas as pd

from kfold_clr.analysis.costs import PER_FOLD_RANGE_TEST, SHARED_RANGE_TEST, _setting, range_test_kind
from kfold_clr.analysis.tables import SNAPSHOT_SUFFIX

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from kfold_clr.analysis.costs import StrategySpec

RESET_OR_CONTINUE = "reset_or_continue"
SHARED_OR_PER_FOLD = "shared_or_per_fold"
CLR_OR_BASELINE = "clr_or_baseline"
SNAPSHOTS_OR_FINAL = "snapshots_or_final"
QUESTIONS = (RESET_OR_CONTINUE, SHARED_OR_PER_FOLD, CLR_OR_BASELINE, SNAPSHOTS_OR_FINAL)

CLR_SCHEDULE = "clr"
NOT_CONFOUNDS = ("snapshots",)
"""Settings that never make a pair unlike: snapshots are recorded, they do not change training."""
OWN_SETTINGS = {
    RESET_OR_CONTINUE: ("across_folds", "carry_weights"),
    SHARED_OR_PER_FOLD: ("bounds", "base_lr", "max_lr"),
}
"""The settings each question is about (a pair may differ in them and still be like for like)."""


@dataclass(frozen=True)
class Answer:
    """The comparisons that answer one question.

    Attributes:
        question: str. One of `QUESTIONS`.
        rows: list of dict. Comparison rows, turned so that A is the first option.
        confounds: list of list of str. Per row, the other settings in which A and B differ.
        uncompared: list of (str, str). Pairs whose strategies ran but were not compared.
        missing: str. What the experiment lacks for the question ("" when its strategies ran).
        sides: tuple of (list, list). The strategies on each side.
    """

    question: str
    rows: list = field(default_factory=list)
    confounds: list = field(default_factory=list)
    uncompared: list = field(default_factory=list)
    missing: str = ""
    sides: tuple = ((), ())

    @property
    def asked(self) -> bool:
        return bool(self.rows)


def _settings(spec: StrategySpec) -> dict[str, Any]:
    if spec is None:
        return {}
    if isinstance(spec, dict):
        return dict(spec)
    return spec.model_dump() if hasattr(spec, "model_dump") else dict(vars(spec))


def _is_clr(spec: StrategySpec) -> bool:
    return _setting(spec, "schedule") == CLR_SCHEDULE


def sides(question: str, strategy_configs: Mapping[str, StrategySpec],
          names: Sequence[str]) -> tuple[list[str], list[str]]:
    """(side A, side B) strategy names of ``question`` among ``names`` (snapshots: the strategies with snapshots)."""
    configs = {name: strategy_configs.get(name) for name in names}
    if question == RESET_OR_CONTINUE:
        clr = [name for name, spec in configs.items() if _is_clr(spec)]
        return ([n for n in clr if _setting(configs[n], "across_folds", "reset") == "reset"],
                [n for n in clr if _setting(configs[n], "across_folds", "reset") == "continue"])
    if question == SHARED_OR_PER_FOLD:
        return ([n for n, spec in configs.items() if range_test_kind(spec) == SHARED_RANGE_TEST],
                [n for n, spec in configs.items() if range_test_kind(spec) == PER_FOLD_RANGE_TEST])
    if question == CLR_OR_BASELINE:
        return ([n for n, spec in configs.items() if _is_clr(spec)],
                [n for n, spec in configs.items() if spec is not None and not _is_clr(spec)])
    if question == SNAPSHOTS_OR_FINAL:
        with_snapshots = [n for n, spec in configs.items() if _setting(spec, "snapshots") is not None]
        return [f"{n}{SNAPSHOT_SUFFIX}" for n in with_snapshots], with_snapshots
    raise ValueError(f"Argument `question` must be one of {list(QUESTIONS)}. Received: question={question!r}")


def turned(row: Mapping[str, Any]) -> dict[str, Any]:
    """A comparison row with A and B swapped: the difference, its interval and the probabilities follow."""
    row = dict(row)
    row["a"], row["b"] = row["b"], row["a"]
    row["mean_diff"] = -row["mean_diff"]
    row["ci95_low"], row["ci95_high"] = -row["ci95_high"], -row["ci95_low"]
    if "t_corrected" in row:
        row["t_corrected"] = -row["t_corrected"]
    row["prob_a_better"], row["prob_b_better"] = row.get("prob_b_better"), row.get("prob_a_better")
    return row


def confounds(question: str, spec_a: StrategySpec, spec_b: StrategySpec) -> list[str]:
    """The settings, besides the question's own, in which two strategy configs differ (sorted)."""
    ignore = set(OWN_SETTINGS.get(question, ())) | set(NOT_CONFOUNDS)
    a, b = _settings(spec_a), _settings(spec_b)
    return sorted(key for key in set(a) | set(b) if key not in ignore and a.get(key) != b.get(key))


def _plain_rows(comparison: pd.DataFrame, metric: str) -> list[dict[str, Any]]:
    rows = comparison[comparison["metric"] == metric]
    plain = ~rows["a"].astype(str).str.endswith(SNAPSHOT_SUFFIX)
    return rows[plain].to_dict(orient="records")


_NEEDS = {
    RESET_OR_CONTINUE: (("reset", "a clr strategy with across_folds: reset"),
                        ("continue", "one with across_folds: continue")),
    SHARED_OR_PER_FOLD: (("shared", "a strategy with bounds: shared_range_test"),
                         ("per fold", "one with bounds: per_fold_range_test")),
    CLR_OR_BASELINE: (("clr", "a strategy with schedule: clr"),
                      ("baseline", "one with another schedule (constant, step, exponential, cosine, "
                                   "cosine_restarts or one_cycle)")),
}


def _missing_text(question: str, first: list[str], second: list[str]) -> str:
    (label_a, need_a), (label_b, need_b) = _NEEDS[question]
    return (f"it needs {need_a} and {need_b}; here {label_a}: {', '.join(first) or 'none'}, "
            f"{label_b}: {', '.join(second) or 'none'}")


def _pair_answer(question: str, rows: list[dict[str, Any]], first: list[str], second: list[str],
                 configs: Mapping[str, StrategySpec]) -> Answer:
    if not first or not second:
        return Answer(question, missing=_missing_text(question, first, second), sides=(first, second))
    found = []
    for row in rows:
        if row["a"] in first and row["b"] in second:
            found.append(row)
        elif row["b"] in first and row["a"] in second:
            found.append(turned(row))
    if question == CLR_OR_BASELINE:  # different schedules by design: no confounds, one answer per baseline
        answered = {row["b"] for row in found}
        return Answer(question, rows=found, confounds=[[] for _ in found], sides=(first, second),
                      uncompared=[(first[0], baseline) for baseline in second if baseline not in answered])
    differ = [confounds(question, configs.get(row["a"]), configs.get(row["b"])) for row in found]
    if any(not d for d in differ):
        found, differ = [row for row, d in zip(found, differ) if not d], [d for d in differ if not d]
    uncompared = []
    if not found:
        pairs = [(a, b) for a in first for b in second]
        like = [pair for pair in pairs if not confounds(question, configs.get(pair[0]), configs.get(pair[1]))]
        uncompared = [(like or pairs)[0]]
    return Answer(question, rows=found, confounds=differ, uncompared=uncompared, sides=(first, second))


def _snapshot_answer(comparison: pd.DataFrame, metric: str, ensembles: list[str], finals: list[str]) -> Answer:
    rows = comparison[comparison["metric"] == metric]
    found = [row for row in rows.to_dict(orient="records")
             if row["a"] in ensembles and row["b"] == str(row["a"]).removesuffix(SNAPSHOT_SUFFIX)]
    if not finals:
        return Answer(SNAPSHOTS_OR_FINAL, missing="it needs a strategy with snapshots: (e.g. snapshots: {keep: 3} "
                                                  "on a clr or cosine_restarts strategy)")
    answered = {row["b"] for row in found}
    return Answer(SNAPSHOTS_OR_FINAL, rows=found, confounds=[[] for _ in found],
                  uncompared=[(f"{name}{SNAPSHOT_SUFFIX}", name) for name in finals if name not in answered],
                  sides=(ensembles, finals))


def answer_questions(comparison: pd.DataFrame, strategy_configs: Mapping[str, StrategySpec], *,
                     strategies: Sequence[str], metric: str) -> list[Answer]:
    """One `Answer` per question of `QUESTIONS`, from the comparison rows of ``metric``.

    Args:
        comparison: DataFrame. `tables.comparison_table` of the run.
        strategy_configs: mapping. Strategy name -> its config (typed or a dict).
        strategies: list of str. The strategies with results, in display order.
        metric: str. The metric the answers are on (the report's primary metric).

    Returns:
        list of `Answer`, in the order of `QUESTIONS`.
    """
    configs = dict(strategy_configs)
    rows = _plain_rows(comparison, metric) if len(comparison) else []
    empty = comparison if len(comparison) else pd.DataFrame(columns=["a", "b", "metric"])
    answers = []
    for question in QUESTIONS:
        first, second = sides(question, configs, strategies)
        if question == SNAPSHOTS_OR_FINAL:
            answers.append(_snapshot_answer(empty, metric, first, second))
        else:
            answers.append(_pair_answer(question, rows, first, second, configs))
    return answers


def other_rows(comparison: pd.DataFrame, answers: Sequence[Answer], metric: str) -> list[dict[str, Any]]:
    """The comparison rows of ``metric`` that answer none of the questions (pairs the user added)."""
    used = {frozenset((row["a"], row["b"])) for answer in answers for row in answer.rows}
    if not len(comparison):
        return []
    rows = comparison[comparison["metric"] == metric].to_dict(orient="records")
    return [row for row in rows if frozenset((row["a"], row["b"])) not in used]
