"""report.md opens with "Answers": each question the strategies ask, answered from comparison.csv
with its verdict, effect size, interval, caution and cost, and "not asked in this experiment" for
each question whose strategies are absent or were not compared."""

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from _results_fixture import N_REPEATS, N_SPLITS, make_config, write_results_dir  # noqa: E402
from kfold_clr.analysis import answers, verdicts  # noqa: E402
from kfold_clr.config import load_config  # noqa: E402
from kfold_clr.report import build_report  # noqa: E402
from kfold_clr.report.answers import TITLES  # noqa: E402

CLR = {"schedule": "clr", "policy": "triangular2", "step_size_epochs": 2}
FIXED = {**CLR, "base_lr": 0.005, "max_lr": 0.05}
ALL = {
    "step_decay": {"schedule": "step", "lr": 0.05, "factor": 0.5, "every_epochs": 2},
    "clr_reset": {**FIXED, "across_folds": "reset"},
    "clr_continue": {**FIXED, "across_folds": "continue"},
    "clr_shared": {**CLR, "bounds": "shared_range_test"},
    "clr_per_fold": {**CLR, "bounds": "per_fold_range_test"},
    "clr_snapshots": {**FIXED, "policy": "triangular", "snapshots": {"keep": 2}},
}
OFFSETS = {"step_decay": 0.0, "clr_reset": 0.03, "clr_continue": 0.0, "clr_shared": 0.02, "clr_per_fold": 0.02,
           "clr_snapshots": 0.03, "constant": 0.0, "clr_carry": 0.04, "clr_other_policy": 0.0}
PAIRS = [["clr_reset", "step_decay"], ["clr_continue", "clr_reset"], ["clr_shared", "clr_per_fold"],
         ["clr_per_fold", "clr_reset"]]
QUESTION_TITLES = [TITLES[question] for question in answers.QUESTIONS]


def make_folds(strategies):
    rng = np.random.default_rng(1)
    split_effect = rng.normal(0.0, 0.02, size=(N_REPEATS, N_SPLITS))
    rows = []
    for name, spec in strategies.items():
        for repeat in range(N_REPEATS):
            for fold in range(N_SPLITS):
                accuracy = 0.8 + OFFSETS[name] + split_effect[repeat, fold] + rng.normal(0.0, 0.004)
                per_fold = spec.get("bounds") == "per_fold_range_test"
                rows.append({
                    "strategy": name, "repeat": repeat, "fold": fold, "status": "ok", "error": "",
                    "n_train": 80, "n_val": 40, "epochs": 4, "iterations": 20 + fold, "fit_seconds": 1.0 + 0.1 * fold,
                    "base_lr": 0.004 + 0.001 * fold if per_fold else 0.005,
                    "max_lr": 0.04 + 0.02 * (repeat + fold) if per_fold else 0.05,
                    "diverged": False, "leaky": spec.get("carry_weights", False) and fold > 0, "optimistic": False,
                    "val_accuracy": accuracy, "train_accuracy": min(accuracy + 0.1, 1.0),
                    "val_loss": 1.2 - accuracy, "train_loss": 0.3,
                    "snapshot_val_accuracy": (accuracy + 0.01 + rng.normal(0.0, 0.002) if "snapshots" in spec
                                              else np.nan),
                    "snapshot_val_loss": 1.2 - accuracy - 0.01 if "snapshots" in spec else np.nan,
                })
    return pd.DataFrame(rows)


def report_of(directory, strategies, *, pairs=None, reference=None):
    config = make_config(strategies=strategies, reference=reference)
    config["compare"]["pairs"] = pairs
    folds = make_folds(strategies)
    write_results_dir(directory, config=config, folds=folds, range_tests=False)
    text = build_report(directory).read_text()
    comparison = pd.read_csv(directory / "comparison.csv")
    return text, comparison, folds


def answers_of(text):
    assert "## Answers" in text
    section = text.split("## Answers")[1].split("\n## ")[0]
    # one paragraph per question, in order
    starts = [section.index(f"**{number}. {title}**") for number, title in enumerate(QUESTION_TITLES, start=1)]
    assert starts == sorted(starts)
    return {question: section[start:end] for question, start, end
            in zip(answers.QUESTIONS, starts, [*starts[1:], len(section)])}


def row_of(comparison, a, b, metric="accuracy"):
    rows = comparison[(comparison.a == a) & (comparison.b == b) & (comparison.metric == metric)]
    assert len(rows) == 1, (a, b)
    record = rows.iloc[0].to_dict()
    record["note"] = record["note"] if isinstance(record["note"], str) else ""
    return record


@pytest.fixture(scope="module")
def everything(tmp_path_factory):
    """All four questions asked, with the pairs named as in experiments/digits-clr.yaml."""
    return report_of(tmp_path_factory.mktemp("results") / "all", ALL, pairs=PAIRS)


def test_answers_come_first_and_cover_every_question_asked(everything):
    text, comparison, folds = everything
    assert text.index("## Answers") < text.index("## Settings")
    assert text.split("\n## ")[1].startswith("Answers")
    sections = answers_of(text)
    assert "not asked in this experiment" not in text.split("## Answers")[1].split("\n## ")[0]
    # each answer carries its comparison's verdict line (effect size in pp, corrected interval, p),
    # its verdict label and its caution, turned so that A is the question's first option
    expected = {
        answers.RESET_OR_CONTINUE: answers.turned(row_of(comparison, "clr_continue", "clr_reset")),
        answers.SHARED_OR_PER_FOLD: row_of(comparison, "clr_shared", "clr_per_fold"),
        answers.CLR_OR_BASELINE: row_of(comparison, "clr_reset", "step_decay"),
        answers.SNAPSHOTS_OR_FINAL: row_of(comparison, "clr_snapshots[snapshots]", "clr_snapshots"),
    }
    for question, row in expected.items():
        section = sections[question]
        assert verdicts.verdict_line(row) in section, question
        assert f"Verdict: {row['verdict']}." in section
        assert "Caution: none." in section
        assert " pp accuracy (95% CI " in section
    # reset vs continue is written reset - continue: the sign of the saved continue - reset row flips
    saved = row_of(comparison, "clr_continue", "clr_reset")
    assert verdicts.format_difference(-saved["mean_diff"], "accuracy") in sections[answers.RESET_OR_CONTINUE]
    assert "clr_reset vs clr_continue:" in sections[answers.RESET_OR_CONTINUE]
    # the pair the user added that no question asks is still named
    assert "Also compared (see Verdicts): clr_per_fold vs clr_reset" in text


def test_answers_give_the_cost_and_the_spread_of_per_fold_bounds(everything):
    text, _, folds = everything
    sections = answers_of(text)
    step = folds[folds.strategy == "step_decay"]
    reset = folds[folds.strategy == "clr_reset"]
    baseline = sections[answers.CLR_OR_BASELINE]
    assert "**Against step_decay (not tuned): " in baseline
    assert (f"clr_reset: {reset['iterations'].sum():,} updates in {reset['fit_seconds'].sum():.1f} s "
            f"(training only)") in baseline
    assert f"step_decay: {step['iterations'].sum():,} updates in {step['fit_seconds'].sum():.1f} s" in baseline
    # no range-test payloads here: their count is known (one shared, one per split), their cost is not
    bounds = sections[answers.SHARED_OR_PER_FOLD]
    assert "1 range test: ? updates" in bounds and f"{N_REPEATS * N_SPLITS} range tests: ? updates" in bounds
    per_fold = folds[folds.strategy == "clr_per_fold"]
    assert (f"Spread of the per-fold bounds (clr_per_fold, {len(per_fold)} folds): max_lr "
            f"{per_fold.max_lr.min():.3g} to {per_fold.max_lr.max():.3g}") in bounds
    assert f"base_lr {per_fold.base_lr.min():.3g} to {per_fold.base_lr.max():.3g}" in bounds
    assert "the shared range test chose max_lr 0.05" in bounds
    assert "no extra training" in sections[answers.SNAPSHOTS_OR_FINAL]


def test_absent_questions_say_not_asked_and_what_would_ask_them(tmp_path):
    strategies = {"step_decay": ALL["step_decay"], "clr_reset": ALL["clr_reset"]}
    text, comparison, _ = report_of(tmp_path / "r", strategies)
    sections = answers_of(text)
    for question in (answers.RESET_OR_CONTINUE, answers.SHARED_OR_PER_FOLD, answers.SNAPSHOTS_OR_FINAL):
        assert "This question is not asked in this experiment: it needs" in sections[question], question
    assert "one with across_folds: continue; here reset: clr_reset, continue: none" in sections[
        answers.RESET_OR_CONTINUE]
    assert "snapshots:" in sections[answers.SNAPSHOTS_OR_FINAL]
    baseline = sections[answers.CLR_OR_BASELINE]
    assert "not asked" not in baseline
    # every pair in order saved step_decay - clr_reset: the answer writes clr_reset - step_decay
    assert verdicts.verdict_line(answers.turned(row_of(comparison, "step_decay", "clr_reset"))) in baseline


def test_a_question_whose_strategies_were_not_compared_says_how_to_ask_it(tmp_path):
    strategies = {name: ALL[name] for name in ("step_decay", "clr_reset", "clr_continue")}
    text, _, _ = report_of(tmp_path / "r", strategies, pairs=[["clr_reset", "step_decay"]])
    reset = answers_of(text)[answers.RESET_OR_CONTINUE]
    assert ("This question is not asked in this experiment: clr_reset and clr_continue ran but were not "
            "compared") in reset
    assert "add [clr_reset, clr_continue] to compare.pairs" in reset


def test_every_pair_compared_picks_like_for_like_pairs_and_flags_cautions(tmp_path):
    carry = {**FIXED, "across_folds": "continue", "carry_weights": True}
    other = {**FIXED, "policy": "triangular", "across_folds": "continue"}
    strategies = {"constant": {"schedule": "constant", "lr": 0.01}, "clr_reset": ALL["clr_reset"],
                  "clr_carry": carry, "clr_other_policy": other}
    text, comparison, _ = report_of(tmp_path / "r", strategies)
    reset = answers_of(text)[answers.RESET_OR_CONTINUE]
    # clr_carry differs from clr_reset only in across_folds / carry_weights; clr_other_policy also in policy
    assert "clr_reset vs clr_carry:" in reset and "clr_other_policy" not in reset
    assert "Caution: clr_carry leaky (carried weights); such scores are optimistic." in reset
    baseline = answers_of(text)[answers.CLR_OR_BASELINE]
    # the saved rows are constant vs each CLR (every pair in order): written CLR - constant
    assert baseline.count("**Against constant (not tuned): ") == 3
    for name in ("clr_reset", "clr_carry", "clr_other_policy"):
        saved = row_of(comparison, "constant", name)
        assert verdicts.verdict_line(answers.turned(saved)) in baseline


def test_answer_questions_keeps_unlike_pairs_with_their_confounds():
    configs = load_config({**make_config(), "strategies": {
        "a": {**FIXED, "across_folds": "reset"}, "b": {**FIXED, "policy": "triangular", "across_folds": "continue"},
    }}).strategies
    comparison = pd.DataFrame([{"a": "b", "b": "a", "metric": "accuracy", "n": 6, "mean_diff": 0.02,
                                "ci95_low": 0.01, "ci95_high": 0.03, "prob_a_better": 0.9, "prob_equivalent": 0.1,
                                "prob_b_better": 0.0, "verdict": "b better", "caution": "", "note": ""}])
    found = answers.answer_questions(comparison, configs, strategies=["a", "b"], metric="accuracy")
    reset = found[answers.QUESTIONS.index(answers.RESET_OR_CONTINUE)]
    assert reset.confounds == [["policy"]]
    row = reset.rows[0]
    assert (row["a"], row["b"], row["mean_diff"]) == ("a", "b", -0.02)
    assert (row["ci95_low"], row["ci95_high"]) == (-0.03, -0.01)
    assert (row["prob_a_better"], row["prob_b_better"]) == (0.0, 0.9)
    assert row["verdict"] == "b better"
    assert all(answer.missing for answer in found if answer.question != answers.RESET_OR_CONTINUE)
