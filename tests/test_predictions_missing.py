"""Issue 24, every prediction kept: a fold whose `rR_fF.predictions.npz` is deleted or damaged is not
done; a rerun trains it again, and a report built before that names the folds `predictions.csv` lacks."""

import copy

import pandas as pd
import pytest

from kfold_clr.cli.main import main

pytestmark = pytest.mark.slow


@pytest.fixture
def finished(tiny_experiment, write_yaml, tmp_path):
    experiment = copy.deepcopy(tiny_experiment)
    experiment["training"]["epochs"] = 1
    experiment["cv"]["n_splits"] = 2
    experiment["strategies"] = {"constant": {"schedule": "constant", "lr": 0.05},
                                "carried": {"schedule": "clr", "base_lr": 0.01, "max_lr": 0.1, "step_size": 2,
                                            "across_folds": "continue", "carry_weights": True}}
    path = write_yaml(experiment)
    assert main(["run", str(path), "-q"]) == 0
    return path, tmp_path / "results"


def stamps(directory):
    return {p.relative_to(directory).as_posix(): p.stat().st_mtime_ns for p in directory.glob("folds/*/*.json")}


@pytest.mark.parametrize("loss", ["deleted", "damaged"])
def test_a_rerun_trains_again_the_fold_whose_predictions_file_is_gone(finished, capsys, loss):
    path, directory = finished
    first = (directory / "predictions.csv").read_bytes()
    before = stamps(directory)
    lost = directory / "folds" / "carried" / "r0_f0.predictions.npz"
    if loss == "deleted":
        lost.unlink()
    else:
        lost.write_bytes(lost.read_bytes()[:40])
    capsys.readouterr()
    assert main(["run", str(path), "-q"]) == 0
    assert "r0_f0.predictions.npz is missing or damaged" in capsys.readouterr().err
    after = stamps(directory)
    assert {name for name in before if after[name] != before[name]} == {"folds/carried/r0_f0.json"}
    assert lost.is_file()
    assert (directory / "predictions.csv").read_bytes() == first  # the same seeds: the same predictions
    assert "lacks the rows" not in (directory / "report.md").read_text()


def test_a_report_built_before_the_rerun_names_the_folds_without_predictions(finished, capsys):
    path, directory = finished
    (directory / "folds" / "constant" / "r0_f1.predictions.npz").unlink()
    capsys.readouterr()
    assert main(["report", str(directory)]) == 0
    assert "predictions.csv lacks the rows of 1 fold(s)" in capsys.readouterr().err
    table = pd.read_csv(directory / "predictions.csv")
    folds = set(map(tuple, table[["strategy", "fold"]].drop_duplicates().to_numpy().tolist()))
    assert folds == {("constant", 0), ("carried", 0), ("carried", 1)}
    report = (directory / "report.md").read_text()
    assert "It lacks the rows of 1 ok fold(s) whose predictions file is missing or damaged: `constant r0_f1`" in report
    assert main(["run", str(path), "-q"]) == 0  # trained again: every fold is back
    assert len(pd.read_csv(directory / "predictions.csv")) == 90 * 2
    assert "lacks the rows" not in (directory / "report.md").read_text()
