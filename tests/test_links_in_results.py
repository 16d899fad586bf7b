"""Hostile runs (issue 23): links planted in a results directory never redirect a write or a delete,
and files a user put inside it are never deleted as ours."""

import copy
import os
import pathlib
import shutil

import pytest
import yaml

from helpers import TINY_EXPERIMENT
from kfold_clr.cli.main import main
from kfold_clr.errors import ResultsError
from kfold_clr.execution.experiment import run_experiment
from kfold_clr.storage import layout, ownership

pytestmark = pytest.mark.slow
REFUSED = ": is a symbolic link (to "


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished tiny run with every kind of file a run writes: records, weights, snapshots,
    range tests, tables, plots, report and TensorBoard events; (config path, results dir)."""
    root = tmp_path_factory.mktemp("finished")
    experiment = copy.deepcopy(TINY_EXPERIMENT)
    experiment["cv"]["n_splits"] = 2
    experiment["training"]["epochs"] = 2
    experiment["strategies"] = {
        "constant": {"schedule": "constant", "lr": 0.05},
        "carry": {"schedule": "clr", "base_lr": 0.01, "max_lr": 0.1, "step_size": 2, "across_folds": "continue",
                  "carry_weights": True},
        "tested": {"schedule": "clr", "bounds": "per_fold_range_test", "step_size": 2,
                   "snapshots": {"keep": 1, "save_weights": True}},
    }
    experiment["output"] = {"dir": str(root / "results"), "tensorboard": True}
    path = root / "experiment.yaml"
    path.write_text(yaml.safe_dump(experiment))
    run_experiment(str(path), verbosity=0)
    return experiment, root / "results"


def tree(directory):
    """Files and folders under `directory` (relative, sorted), the marker left out."""
    found = sorted(p.relative_to(directory).as_posix() for p in pathlib.Path(directory).rglob("*"))
    return [name for name in found if name != ownership.MARKER]


def copy_of(finished, tmp_path):
    experiment, results = finished
    out = tmp_path / "results"
    shutil.copytree(results, out, symlinks=True)
    experiment = {**copy.deepcopy(experiment), "output": {**experiment["output"], "dir": str(out)}}
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(experiment))
    return path, out


def plant_links(out, names, user):
    """Replace each name under `out` by a link to a user file of its own; {link: (target, text)}."""
    user.mkdir()
    planted = {}
    for index, name in enumerate(names):
        link = out / name
        target = user / f"file{index}.txt"
        target.write_text(f"user file {index}\n")
        if link.is_dir() and not link.is_symlink():
            shutil.rmtree(link)
        elif os.path.lexists(link):
            link.unlink()
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(target)
        planted[str(link)] = (target, target.read_text())
    return planted


def refusals(argv, planted, capsys, limit):
    """Run `argv` until it succeeds; each refusal must name one planted link (then removed)."""
    named = []
    for _ in range(limit):
        code = main(argv)
        err = capsys.readouterr().err.strip().splitlines()
        if code == 0:
            return named
        assert code == 2 and err and REFUSED in err[-1], err[-3:]
        link = err[-1].removeprefix("kfold-clr: error: ").partition(REFUSED)[0]
        assert link in planted and link not in named, err[-1]
        named.append(link)
        os.unlink(link)
    raise AssertionError(f"still refused after {limit} runs: {named}")


def test_a_link_at_any_path_a_run_writes_is_refused_and_its_target_untouched(finished, tmp_path, capsys):
    """Every file of a finished run (and the lock's owner note and the old write probe) planted as a
    link to a user file: resuming, then `--fresh`, refuse each one by name, one at a time, and
    no user file changes."""
    _, results = finished
    files = [name for name in tree(results) if (results / name).is_file()]
    assert {"folds/carry/r0_f0.weights.npz", "folds/tested/r0_f0.snapshots.npz", "range_tests/r0_f1.json",
            "plots/lr_trace.png", "report.md", "meta.json"} <= set(files)
    assert any(name.startswith("tensorboard/tested/r0_f1/events.out.tfevents.") for name in files)
    path, out = copy_of(finished, tmp_path)
    names = [*files, ".lock.owner", ".write-probe"]
    planted = plant_links(out, names, tmp_path / "user")
    named = refusals(["run", str(path), "-q"], planted, capsys, limit=len(names) + 2)
    named += refusals(["run", str(path), "-q", "--fresh"], planted, capsys, limit=len(names) + 2)
    assert all(target.read_text() == text for target, text in planted.values())
    # Each path the run writes or deletes was refused by name; the probe has a fresh name now.
    assert sorted(named) == sorted(str(out / name) for name in names if name != ".write-probe")
    assert os.path.islink(out / ".write-probe") and (out / "report.md").is_file()


def test_a_link_in_place_of_any_folder_a_run_writes_into_is_refused(finished, tmp_path, capsys):
    _, results = finished
    folders = [name for name in tree(results) if (results / name).is_dir()]
    assert {"folds/carry", "plots", "range_tests", "tensorboard/constant/r0_f1"} <= set(folders)
    path, out = copy_of(finished, tmp_path)
    innermost = [name for name in folders if not any(other.startswith(name + "/") for other in folders)]
    planted = plant_links(out, innermost, tmp_path / "user")
    named = refusals(["run", str(path), "-q", "--fresh"], planted, capsys, limit=len(innermost) + 2)
    assert sorted(named) == sorted(str(out / name) for name in innermost)
    assert all(target.read_text() == text for target, text in planted.values())


def test_report_and_run_never_write_through_the_lock_owner_or_probe(finished, tmp_path, capsys):
    """The issue's own case: `.lock.owner` and `.write-probe` as links to a user's file."""
    path, out = copy_of(finished, tmp_path)
    precious = tmp_path / "bashrc"
    precious.write_text("export PATH=...\n")
    (out / ".lock.owner").symlink_to(precious)
    assert main(["report", str(out)]) == 2
    assert f"{out / '.lock.owner'}{REFUSED}{precious}" in capsys.readouterr().err
    (out / ".lock.owner").unlink()
    (out / ".write-probe").symlink_to(precious)
    assert main(["report", str(out)]) == 0 and main(["run", str(path), "-q"]) == 0
    assert precious.read_text() == "export PATH=...\n" and not (out / ".lock.owner").exists()


def test_guard_refuses_links_among_the_folders_and_paths_resolving_outside(tmp_path):
    results = tmp_path / "results"
    ownership.claim(results)
    outside = tmp_path / "outside"
    outside.mkdir()
    (results / "plots").symlink_to(outside)
    with pytest.raises(ResultsError, match=r"plots: is a symbolic link .*remove it, then rerun"):
        ownership.guard(results / "plots" / "lr_trace.png")
    assert ownership.guard(results / "folds" / "a" / "r0_f0.json") == results / "folds" / "a" / "r0_f0.json"
    loose = tmp_path / "elsewhere" / "file.json"  # outside any results directory: only the path itself
    assert ownership.guard(loose) == loose


# ----------------------------------------------------------------------------- user files inside
USER_FILES = ["plots/my_figure.png", "plots/notes.txt", "folds/constant/notes.json", "folds/mine.txt",
              "tensorboard/constant/r0_f0/my.log", "tensorboard/readme.md", "range_tests/mine.json",
              "range_tests/shared.json.bak", "folds/constant/tune/remarks.txt", "mine/deep/file.txt"]


def test_fresh_deletes_only_what_a_run_writes_and_names_what_it_kept(finished, tmp_path, capsys):
    path, out = copy_of(finished, tmp_path)
    for name in USER_FILES:
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text(f"mine: {name}\n")
    assert main(["run", str(path), "-q", "--fresh"]) == 0
    err = capsys.readouterr().err
    assert all((out / name).read_text() == f"mine: {name}\n" for name in USER_FILES)
    warnings = [line for line in err.splitlines() if "did not write" in line]
    assert len(warnings) == 1 and warnings[0].startswith("kfold-clr: warning: kept 9 file(s) in ")
    assert all(name in warnings[0] for name in USER_FILES if not name.startswith("mine/"))
    # The run's own files were replaced: one events file per fold folder, not two.
    assert len(list((out / "tensorboard" / "constant" / "r0_f0").glob("events.out.tfevents.*"))) == 1


def test_a_plain_run_leaves_user_files_that_look_like_temporaries(finished, tmp_path, capsys):
    path, out = copy_of(finished, tmp_path)
    mine = {".notes.tmp": "notes", ".mywork.tmp/draft.txt": "draft", "folds/constant/.x.tmp": "x",
            ".unknown.abcdefgh.tmp": "looks random", "plots/.figure.png.abcdefgh.tmp": "not one of ours"}
    stale = [".folds.csv.k2j4h5g6.tmp", "folds/constant/.r0_f0.json.a1b2c3d4.tmp",
             "plots/.lr_trace.png.zz_9yx8w.tmp", "..lock.owner.abcd1234.tmp"]
    for name, text in {**mine, **dict.fromkeys(stale, "stale")}.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text(text)
    assert main(["run", str(path), "-q"]) == 0
    assert all((out / name).read_text() == text for name, text in mine.items())
    assert not any((out / name).exists() for name in stale)


@pytest.mark.parametrize("relative, ours", [
    ("folds.csv", True), (".notes.tmp", False), (".folds.csv.abcdefgh.tmp", False),
    ("folds/clr/r0_f3.json", True), ("folds/clr/r0_f3.json.bak", False), ("folds/clr/notes.json", False),
    ("folds/clr/tune/r0_f0_i1of3_p2.json", True), ("plots/lr_trace.png", True), ("plots/holiday.png", False),
    ("range_tests/shared.json", True), ("tensorboard/clr/r0_f0/events.out.tfevents.17.host.1.2.v2", True),
    ("tensorboard/clr/r0_f0/events.txt", False), ("mine/folds.csv", False)])
def test_layout_names_exactly_what_a_run_writes(relative, ours):
    assert layout.written_by_a_run(relative) is ours
