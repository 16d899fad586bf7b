"""The README's quick start, figure and table, and the digits tutorial's table and prose, stay true to
the repository."""

import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "docs"))

import sync_readme  # noqa: E402

README = (ROOT / "README.md").read_text(encoding="utf-8")
TUTORIAL = (ROOT / "docs" / "tutorials" / "digits.md").read_text(encoding="utf-8")


def test_readme_and_tutorial_tables_are_the_committed_example_comparison():
    for page, text in (("README.md", README), ("docs/tutorials/digits.md", TUTORIAL)):
        table = sync_readme.readme_table(text)
        assert table.count("\n") >= 3, f"the {page} table has no rows; run docs/sync_readme.py"
        assert table == sync_readme.expected_table(), f"{page}: run docs/sync_readme.py"


def test_readme_fits_on_two_screens_and_opens_with_the_quick_start():
    assert len(README.splitlines()) <= 180
    first_block = re.search(r"```(\w*)\n(.*?)```", README, re.S)
    assert first_block.group(2) in README.split("## Quick start", 1)[1]
    assert "python -m kfold_clr run experiments/digits-clr.yaml" in first_block.group(2)
    for link in re.findall(r"\]\(((?:docs/|CHANGELOG|LICENSE)[^)#]*)", README):  # links into the site
        assert (ROOT / link).is_file(), link


def test_readme_figure_exists():
    for image in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", README):
        assert (ROOT / image).is_file(), image


def test_quick_start_commands_and_ci_use_the_same_test_command():
    block = re.search(r"## Quick start\n\n```bash\n(.*?)```", README, re.S).group(1).strip().splitlines()
    assert len(block) == 2
    assert block[0].endswith("python -m kfold_clr run experiments/digits-clr.yaml")
    test_command = block[1].split("&&", 1)[1].strip()
    ci = (ROOT / ".ci" / "run").read_text()
    assert test_command in ci
    config = block[0].rsplit(" ", 1)[1]
    assert (ROOT / config).is_file()


def test_committed_example_results_match_the_example_config():
    import yaml

    from kfold_clr.config import load_config

    resolved = yaml.safe_load((ROOT / "results" / "digits-clr" / "config.yaml").read_text())
    example = load_config(ROOT / "experiments" / "digits-clr.yaml").to_dict()
    # training.loss is the one setting filled in at run time (from the data's task)
    assert example["training"].pop("loss") is None
    assert resolved["training"].pop("loss") == "sparse_categorical_crossentropy"
    assert list(example) == list(resolved)
    for section in example:
        assert example[section] == resolved[section], section


def test_committed_example_report_is_what_build_report_writes(tmp_path):
    from kfold_clr.report import build_report

    copy = tmp_path / "digits-clr"  # same folder name: report.md names the results folder
    committed = _committed_example(copy)
    for name in ("summary.csv", "comparison.csv", "report.md"):
        (copy / name).unlink()
    assert build_report(copy) == copy / "report.md"
    for name in ("summary.csv", "comparison.csv", "report.md"):
        assert (copy / name).read_bytes() == committed[name], name


def _committed_example(copy) -> dict:
    """Write the example's files as git holds them into `copy` (a clean clone's view, also after the
    README's first command has rerun the example here); return {name: committed bytes}."""
    folder = "results/digits-clr"
    try:
        listed = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z", folder], capture_output=True,
                                check=True).stdout.decode().split("\0")
        names = [name for name in listed if name]
        contents = {name: subprocess.run(["git", "-C", str(ROOT), "show", f"HEAD:{name}"], capture_output=True,
                                         check=True).stdout for name in names}
    except (OSError, subprocess.CalledProcessError):  # not a git checkout: the files as they are
        names = [str(path.relative_to(ROOT)) for path in (ROOT / folder).rglob("*") if path.is_file()
                 and not {"folds", "range_tests"} & set(path.relative_to(ROOT / folder).parts)
                 and path.name not in ("predictions.csv",) and not path.name.startswith(".lock")]
        contents = {name: (ROOT / name).read_bytes() for name in names}
    for name, content in contents.items():
        target = copy / pathlib.Path(name).relative_to(folder)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
    return {pathlib.Path(name).name: content for name, content in contents.items()
            if pathlib.Path(name).parent == pathlib.Path(folder)}


def test_the_readme_prose_reports_what_the_committed_table_says():
    import pandas as pd

    comparison = pd.read_csv(ROOT / "results" / "digits-clr" / "comparison.csv")
    rows = comparison[comparison["metric"] == "accuracy"].set_index(["a", "b"])
    folds = pd.read_csv(ROOT / "results" / "digits-clr" / "folds.csv")
    prose = TUTORIAL.split("<!-- digits-comparison:end -->")[1].split("The LR each strategy applied")[0]
    prose = " ".join(prose.split())
    if (rows["p_holm"] < 0.05).any():  # the prose claims no detectable difference
        raise AssertionError("a difference is significant now: rewrite the tutorial's prose from the table")
    assert "on accuracy, none of the choices" in prose and "no Holm-adjusted p below 0.05" in prose
    losses = comparison[comparison["metric"] == "loss"].set_index(["a", "b"])
    assert losses.index[losses["p_holm"] < 0.05].tolist() == [("clr_continue", "clr_reset")]
    loss = losses.loc[("clr_continue", "clr_reset")]
    assert f"worse (+{loss['mean_diff']:.3f}, Holm p = {loss['p_holm']:.2f}), the only significant" in prose
    equivalent = rows["prob_equivalent"]
    assert f"decay are probably equivalent ({equivalent[('clr_reset', 'step_decay')]:.0%} probability" in prose
    assert f"so are CLR and the tuned step decay ({equivalent[('clr_reset', 'step_tuned')]:.0%})" in prose
    summary = pd.read_csv(ROOT / "results" / "digits-clr" / "summary.csv").drop_duplicates("strategy")
    cost = summary.set_index("strategy")["total_iterations"]
    fits = folds.loc[folds["strategy"] == "step_tuned", "tune_fits"]
    assert fits.nunique() == 1
    assert (f"cost {cost['step_tuned'] / cost['clr_reset']:.1f} times the updates ({cost['step_tuned']:,.0f} "
            f"against {cost['clr_reset']:,.0f}: {int(fits.iloc[0])} grid fits per outer fold)") in prose
    tuned = folds.loc[folds["strategy"] == "step_tuned", "tuned_lr"].value_counts()
    assert f"chose an LR of {tuned.index[0]:g} in {tuned.iloc[0]} of the {tuned.sum()} folds" in prose
    assert (f"and with hand-picked ones are probably equivalent too "
            f"({equivalent[('clr_per_fold', 'clr_reset')]:.0%})") in prose
    shared = rows.loc[("clr_shared", "clr_per_fold")]
    assert (f"({100 * shared['mean_diff']:.1f} pp; {shared['prob_equivalent']:.0%} equivalent, "
            f"{shared['prob_b_better']:.0%} that per-fold is better)") in prose
    continued = rows.loc[("clr_continue", "clr_reset")]
    assert f"on accuracy {100 * continued['mean_diff']:.1f} pp, {continued['prob_b_better']:.0%} probability" in prose
    per_fold = folds.loc[folds["strategy"] == "clr_per_fold", "max_lr"]
    assert f"between {per_fold.min():.2f} and {per_fold.max():.2f}" in prose
    assert f"within a factor of {per_fold.max() / per_fold.min():.1f}" in prose
    needed = rows.loc[("clr_per_fold", "clr_reset"), "splits_needed"]  # the splits that would settle them
    assert f"about {needed:.0f} splits ({needed / 5:.0f} repeats of 5 folds) would tell a 0.5 pp" in prose
    unreachable = [("clr_continue", "clr_reset"), ("clr_shared", "clr_per_fold"), ("clr_reset", "step_decay"),
                   ("clr_reset", "step_tuned")]
    assert rows.loc[unreachable, "splits_needed"].isna().all() and "no number of repeats of 5 folds would" in prose
    snapshots = rows.loc[("clr_snapshots[snapshots]", "clr_snapshots")]
    assert snapshots["verdict"] == "practically equivalent"
    assert f"final model are practically equivalent ({snapshots['prob_equivalent']:.0%})" in prose
