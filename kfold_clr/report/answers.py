"""The report's first section, "Answers": each practitioner's question in plain sentences.

`analysis.answers` finds the comparisons that answer each question; this module
writes them: per comparison the answer, the verdict line (effect size in the
primary metric, in percentage points for accuracy, its corrected interval, p and
the Bayesian probabilities), the caution flags and what each side cost; for the
range-test question also the spread of the per-fold bounds; and for a question the
run does not ask, "not asked in this experiment" and what would ask it. Nothing
here reads or writes files.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import pandas as pd

from kfold_clr.analysis import answers as questions
from kfold_clr.analysis import power, tables, verdicts

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from kfold_clr.analysis.costs import StrategySpec

TITLES = {
    questions.RESET_OR_CONTINUE: "Reset the cyclical LR in every fold, or continue it across folds?",
    questions.SHARED_OR_PER_FOLD: "One shared LR range test for every fold, or one range test per fold?",
    questions.CLR_OR_BASELINE: "Does CLR beat each baseline schedule, tuned or not, and at what cost?",
    questions.SNAPSHOTS_OR_FINAL: "Does the snapshot ensemble beat the final model?",
}
OPTIONS = {
    questions.RESET_OR_CONTINUE: ("reset", "continue"),
    questions.SHARED_OR_PER_FOLD: ("one shared range test", "a range test per fold"),
    questions.CLR_OR_BASELINE: ("CLR", "the baseline"),
    questions.SNAPSHOTS_OR_FINAL: ("the snapshot ensemble", "the final model"),
}
NOT_ASKED = "not asked in this experiment"
UNKNOWN_SECONDS = "? s"


# ---------------------------------------------------------------- cost


def _updates(value: float) -> str:
    return f"{int(round(value)):,} updates" if math.isfinite(value) else "? updates"


def _seconds(value: float) -> str:
    return f"{value:.1f} s" if math.isfinite(value) else UNKNOWN_SECONDS


def cost_text(name: str, cost: Mapping[str, Any] | None) -> str:
    """What one strategy cost, in words: "clr_shared: 4,953 updates in 9.1 s (training 4,860 updates in
    8.7 s; 1 range test: 93 updates in 0.4 s, shared with clr_other)".

    Args:
        name: str. The strategy.
        cost: mapping or None. Its row of `costs.cost_table` (or of summary.csv).
    """
    if cost is None:
        return f"{name}: cost unknown"
    value = {key: _float(cost.get(key)) for key in
             ("train_iterations", "train_seconds", "range_test_iterations", "range_test_seconds",
              "tune_iterations", "tune_seconds", "total_iterations", "total_seconds", "range_tests")}
    parts = [f"training {_updates(value['train_iterations'])} in {_seconds(value['train_seconds'])}"]
    n_tests = int(value["range_tests"]) if math.isfinite(value["range_tests"]) else 0
    if n_tests:
        shared = cost.get("range_test_shared_with")
        shared = f", shared with {shared}" if isinstance(shared, str) and shared else ""
        parts.append(f"{n_tests} range test{'s' if n_tests > 1 else ''}: {_updates(value['range_test_iterations'])} "
                     f"in {_seconds(value['range_test_seconds'])}{shared}")
    if tables.as_bool(pd.Series([cost.get("tuned", False)])).iloc[0]:
        parts.append(f"tuning: {_updates(value['tune_iterations'])} in {_seconds(value['tune_seconds'])}")
    detail = f"({'; '.join(parts)})" if len(parts) > 1 else "(training only)"
    shared = _float(cost.get("fused_folds"))
    if math.isfinite(shared) and shared > 0:
        detail += (f"; {int(shared)} fold{'s' if shared != 1 else ''} trained fused, "
                   "{} seconds a share of their jobs' time".format("its" if shared == 1 else "their"))
    return f"{name}: {_updates(value['total_iterations'])} in {_seconds(value['total_seconds'])} {detail}"


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _ratio_text(a: str, b: str, cost_a: Mapping[str, Any] | None, cost_b: Mapping[str, Any] | None) -> str:
    if cost_a is None or cost_b is None:
        return ""
    total_a, total_b = _float(cost_a.get("total_iterations")), _float(cost_b.get("total_iterations"))
    if not (math.isfinite(total_a) and math.isfinite(total_b)) or total_b <= 0:
        return ""
    ratio = total_a / total_b
    if math.isclose(ratio, 1.0, rel_tol=0.005):
        return "; the same number of updates"
    return f"; {a} took {ratio:.2f}x the updates of {b}"


# ---------------------------------------------------------------- one comparison


def _answer_word(question: str, row: Mapping[str, Any]) -> str:
    label = row.get("verdict") or verdicts.classify(row)
    first, second = OPTIONS[question]
    if question == questions.CLR_OR_BASELINE:
        first, second = f"CLR ({row['a']})", f"the baseline ({row['b']})"
    if label.endswith(" better"):
        return first if label.removesuffix(" better") == row["a"] else second
    return {verdicts.EQUIVALENT: "practically equivalent, either will do",
            verdicts.NO_EVIDENCE: "no evidence either way",
            verdicts.TOO_FEW_SPLITS: "cannot tell: too few splits",
            verdicts.UNDETERMINED: "cannot tell: no test"}.get(label, label)


def _caution_text(row: Mapping[str, Any]) -> str:
    text = row.get("caution")
    return f"{text}; such scores are optimistic" if isinstance(text, str) and text else "none"


def _settle_text(row: Mapping[str, Any], k: int) -> str:
    """How many splits would settle an open comparison (`comparison.csv`: splits_needed), or why repeats cannot."""
    needed, n = _float(row.get("splits_needed")), int(row["n"])
    if tables.looks_equivalent(row):
        rope = verdicts.format_difference(row["rope"], row["metric"], signed=False)
        size = f"a difference of the rope's size ({rope}) from none"
    else:
        size = "a difference this large"
    if math.isfinite(needed):
        repeats = int(round(needed / k))
        if needed <= n:
            return (f"These {n} splits would already tell {size} 80% of the time, so the true difference is "
                    "probably smaller than that.")
        return (f"To settle it, about {int(needed)} splits ({repeats} repeat{'s' if repeats != 1 else ''} of "
                f"{k} folds; {n} now) would tell {size} 80% of the time.")
    difference = _float(row.get("mean_diff"))
    if not math.isfinite(difference) or difference == 0 or not math.isfinite(_float(row.get("mde"))):
        return ""
    return (f"More repeats cannot settle it: even {power.MAX_REPEATS} repeats of {k} folds leave the corrected "
            f"variance above its floor (n_val/n_train x the variance of the differences), too wide to tell {size}; "
            "more data, or more folds (a smaller n_val/n_train), would help.")


def _finding(question: str, row: Mapping[str, Any], confound: Sequence[str], costs: Mapping[str, Mapping[str, Any]],
             tuned: Mapping[str, bool], k: int) -> str:
    row = {**row, "note": row.get("note") if isinstance(row.get("note"), str) else ""}
    label = row.get("verdict") or verdicts.classify(row)
    lead = f"Answer: {_answer_word(question, row)}"
    if question == questions.CLR_OR_BASELINE:
        lead = f"Against {row['b']} ({'tuned' if tuned.get(row['b']) else 'not tuned'}): {_answer_word(question, row)}"
    text = f"- **{lead}.** {verdicts.verdict_line(row)}. Verdict: {label}."
    if label == verdicts.NO_EVIDENCE:
        text += f" {_settle_text(row, k)}"
    text += f" Caution: {_caution_text(row)}."
    if confound:
        text += f" The pair also differs in {', '.join(confound)}, so the difference is not only the question's."
    if question == questions.SNAPSHOTS_OR_FINAL:
        text += " Cost: no extra training (the snapshots are taken during the same training)."
    else:
        cost_a, cost_b = costs.get(row["a"]), costs.get(row["b"])
        text += (f" Cost: {cost_text(row['a'], cost_a)}; {cost_text(row['b'], cost_b)}"
                 f"{_ratio_text(row['a'], row['b'], cost_a, cost_b)}.")
    return text


# ---------------------------------------------------------------- one question


def _how_to_compare(a: str, b: str, reference: str | None) -> str:
    if reference:
        return (f"compare.reference={reference!r} compares each strategy with {reference} only; list "
                f"[{a}, {b}] in compare.pairs instead")
    return f"add [{a}, {b}] to compare.pairs"


def _uncompared_line(question: str, answer: questions.Answer, pair: tuple[str, str], reference: str | None) -> str:
    a, b = pair
    if question == questions.SNAPSHOTS_OR_FINAL:
        return (f"- {b} has snapshots, but no snapshot ensemble was scored (a snapshot counts only after a full "
                f"cycle of training in its own fold), so this is not answered for {b}.")
    if question == questions.CLR_OR_BASELINE and answer.rows:
        return f"- {b} (a baseline) was not compared with a CLR strategy: {_how_to_compare(a, b, reference)}."
    return (f"- This question is {NOT_ASKED}: {', '.join(answer.sides[0])} and {', '.join(answer.sides[1])} "
            f"ran but were not compared; {_how_to_compare(a, b, reference)}.")


def _spread_lines(answer: questions.Answer, folds: pd.DataFrame, status: pd.Series) -> list[str]:
    """The spread of the bounds each per-fold strategy's range tests chose, beside the shared bounds."""
    shared, per_fold = answer.sides
    usable = (status != tables.FAILED).to_numpy()
    lines = []

    def bounds(name: str) -> tuple[pd.Series, pd.Series]:
        frame = folds[(folds["strategy"].astype(str) == name).to_numpy() & usable]
        return (pd.to_numeric(frame.get("base_lr"), errors="coerce").dropna(),
                pd.to_numeric(frame.get("max_lr"), errors="coerce").dropna())

    shared_text = ""
    for name in shared:
        base, peak = bounds(name)
        if len(peak):
            chosen = f"max_lr {peak.iloc[0]:.3g}" + (f", base_lr {base.iloc[0]:.3g}" if len(base) else "")
            shared_text = f"; the shared range test chose {chosen} ({name})"
            break
    for name in per_fold:
        base, peak = bounds(name)
        if peak.empty:
            continue
        factor = peak.max() / peak.min() if peak.min() > 0 else math.nan
        apart = f" ({factor:.2f}x apart)" if math.isfinite(factor) else ""
        base_text = f", base_lr {base.min():.3g} to {base.max():.3g}" if len(base) else ""
        lines.append(f"- Spread of the per-fold bounds ({name}, {len(peak)} folds): max_lr {peak.min():.3g} to "
                     f"{peak.max():.3g}{apart}{base_text}{shared_text}.")
    return lines


def _question_text(number: int, answer: questions.Answer, *, costs: Mapping[str, Mapping[str, Any]],
                   tuned: Mapping[str, bool], folds: pd.DataFrame, status: pd.Series, reference: str | None,
                   k: int) -> str:
    question = answer.question
    lines = [f"**{number}. {TITLES[question]}**", ""]
    if answer.missing:
        lines.append(f"- This question is {NOT_ASKED}: {answer.missing}.")
    for row, confound in zip(answer.rows, answer.confounds):
        lines.append(_finding(question, row, confound, costs, tuned, k))
    for pair in answer.uncompared:
        lines.append(_uncompared_line(question, answer, pair, reference))
    if question == questions.SHARED_OR_PER_FOLD:
        lines += _spread_lines(answer, folds, status)
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- the section


def answers_section(comparison: pd.DataFrame, cost: pd.DataFrame, *, strategy_configs: Mapping[str, StrategySpec],
                    strategies: Sequence[str], folds: pd.DataFrame, status: pd.Series, metric: str,
                    rope: float | None, reference: str | None = None) -> str:
    """The "Answers" section: one paragraph per question, from the run's comparisons.

    Args:
        comparison: DataFrame. `tables.comparison_table` of the run.
        cost: DataFrame. `costs.cost_table` (one row per strategy).
        strategy_configs: mapping. Strategy name -> config.
        strategies: list of str. The strategies with results, in display order.
        folds: DataFrame. Rows of ``folds.csv`` (for the per-fold bounds).
        status: Series. `tables.fold_status` of ``folds``.
        metric: str. The primary metric.
        rope: float or None. The primary metric's region of practical equivalence, in its
            units; None: no rope (equivalent only when identical).
        reference: str or None. The reference the comparisons were made against.

    Returns:
        str, Markdown starting with "## Answers".
    """
    found = questions.answer_questions(comparison, strategy_configs, strategies=strategies, metric=metric)
    costs = {record["strategy"]: record for record in cost.to_dict(orient="records")}
    tuned = {name: bool(tables.as_bool(pd.Series([record.get("tuned", False)])).iloc[0])
             for name, record in costs.items()}
    equivalent = (f"calls them practically equivalent when the posterior puts at least "
                  f"{verdicts.EQUIVALENCE_PROBABILITY:.0%} inside +-"
                  f"{verdicts.format_difference(rope, metric, signed=False)}" if rope is not None else
                  f"calls them practically equivalent only when their scores are identical (no rope for {metric})")
    text = ("## Answers\n\n"
            f"The questions this experiment asks, answered on **{metric}** from the comparisons below "
            f"(`comparison.csv`; A - B on shared splits). A verdict names a winner when the Holm-adjusted "
            f"p < {verdicts.ALPHA}, {equivalent}, and otherwise finds no evidence of a difference, with how many "
            f"splits would settle it (80% power). Cost is compared in optimizer updates spent on training, range "
            f"tests and tuning (`summary.csv`), with the wall time beside it; folds trained fused share their "
            f"job's time, so their seconds are shares. A shared range test is counted in full for each strategy "
            f"it serves"
            + (f"; {UNKNOWN_SECONDS}: a range test saved before its time was recorded" if _any_unknown(cost) else "")
            + ".\n\n")
    k = int(folds["fold"].nunique()) if len(folds) else 0
    text += "\n".join(_question_text(number, answer, costs=costs, tuned=tuned, folds=folds, status=status,
                                     reference=reference, k=k)
                      for number, answer in enumerate(found, start=1))
    others = questions.other_rows(comparison, found, metric)
    if others:
        text += ("\nAlso compared (see Verdicts): "
                 + ", ".join(f"{row['a']} vs {row['b']} ({row['verdict']})" for row in others) + ".\n")
    return text


def _any_unknown(cost: pd.DataFrame) -> bool:
    if not len(cost):
        return False
    seconds = pd.to_numeric(cost["total_seconds"], errors="coerce")
    return bool(seconds.isna().any())
