"""The README's quick start, figure and table stay true to the repository."""

import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "docs"))

import sync_readme  # noqa: E402

README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_readme_table_is_the_committed_example_comparison():
    table = sync_readme.readme_table(README)
    assert table.count("\n") >= 3, "the README table has no rows; run docs/sync_readme.py"
    assert table == sync_readme.expected_table()


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

    resolved = yaml.safe_load((ROOT / "results" / "digits-clr" / "config.yaml").read_text())
    example = yaml.safe_load((ROOT / "experiments" / "digits-clr.yaml").read_text())
    assert list(resolved["strategies"]) == list(example["strategies"])
    assert resolved["training"]["epochs"] == example["training"]["epochs"]
    completed = subprocess.run([sys.executable, "-m", "kfold_clr", "--version"], capture_output=True, text=True)
    assert completed.returncode == 0
