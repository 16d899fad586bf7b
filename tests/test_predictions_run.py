"""Issue 24, item 5, end to end: `kfold-clr run` keeps every validation row's prediction, and they are
the fold's own model's predictions."""

import copy
import json

import numpy as np
import pandas as pd
import pytest
import yaml

from helpers import TINY_EXPERIMENT
from kfold_clr.cli.main import main
from kfold_clr.planning.preflight import prepare
from kfold_clr.storage.store import ResultsStore
from kfold_clr.training.fold_plans import plan_folds
from kfold_clr.training.trainer import initial_model, prepare_fold

pytestmark = pytest.mark.slow


def _finished_run(folder):
    """A finished two-strategy run under `folder`: (config path, experiment, results dir)."""
    experiment = copy.deepcopy(TINY_EXPERIMENT)
    experiment["output"] = {"dir": str(folder / "results")}
    experiment["training"]["epochs"] = 1
    experiment["cv"]["n_splits"] = 2
    experiment["strategies"] = {  # carry_weights keeps each fold's final weights on disk
        "constant": {"schedule": "constant", "lr": 0.05},
        "carried": {"schedule": "clr", "base_lr": 0.01, "max_lr": 0.1, "step_size": 2, "across_folds": "continue",
                    "carry_weights": True},
    }
    path = folder / "experiment.yaml"
    path.write_text(yaml.safe_dump(experiment))
    assert main(["run", str(path), "-q"]) == 0
    return path, experiment, folder / "results"


@pytest.fixture(scope="module")
def shared_run(tmp_path_factory):
    """One finished run for the tests that only read it."""
    return _finished_run(tmp_path_factory.mktemp("shared_run"))


@pytest.fixture
def run_dir(tmp_path):
    """A finished run of the test's own, for a test that reruns or changes it."""
    return _finished_run(tmp_path)


def test_run_keeps_every_validation_row_and_the_models_own_predictions(shared_run):
    path, experiment, directory = shared_run
    table = pd.read_csv(directory / "predictions.csv")
    folds = pd.read_csv(directory / "folds.csv")
    splits = json.loads((directory / "splits.json").read_text())["splits"]
    assert list(table.columns[:6]) == ["strategy", "repeat", "fold", "row", "y_true", "y_pred"]
    for row in folds.itertuples():
        rows = table[(table["strategy"] == row.strategy) & (table["repeat"] == row.repeat)
                     & (table["fold"] == row.fold)]
        assert len(rows) == row.n_val
        assert sorted(rows["row"]) == sorted(splits[row.fold]["val"])

    config, dataset, split_list, _ = prepare(experiment)
    np.testing.assert_array_equal(table["y_true"], dataset.y[table["row"].to_numpy()])
    plans = plan_folds("carried", config.strategies["carried"], split_list, seed=config.seed,
                       epochs=config.training.epochs, batch_size=config.training.batch_size)
    probs = [column for column in table.columns if column.startswith("prob_")]
    assert len(probs) == dataset.n_outputs
    for plan in plans:  # the fold's final model, rebuilt from its saved weights, predicts the same
        x_val = prepare_fold(dataset, plan.split, config.data)[2]
        model = initial_model(config, dataset, plan, x_val.shape[1:])
        model.set_weights(ResultsStore(directory).load_weights("carried", plan.key))
        own = np.asarray(model.predict(x_val, verbose=0))
        rows = table[(table["strategy"] == "carried") & (table["fold"] == plan.split.fold)]
        saved = rows.set_index("row").loc[np.asarray(plan.split.val)]  # in the split's row order
        np.testing.assert_allclose(saved[probs].to_numpy(), own, atol=1e-5)
        np.testing.assert_array_equal(saved["y_pred"].to_numpy(), own.argmax(axis=1))


def test_resume_report_and_fresh_rebuild_predictions(run_dir, capsys):
    path, _, directory = run_dir
    first = (directory / "predictions.csv").read_bytes()
    assert main(["run", str(path), "-q"]) == 0  # resumed: nothing to train, the same table
    assert (directory / "predictions.csv").read_bytes() == first
    assert main(["report", str(directory)]) == 0
    assert (directory / "predictions.csv").read_bytes() == first
    assert len(list(directory.glob("folds/*/r0_f*.predictions.npz"))) == 4
    mine = directory / "folds" / "constant" / "mine.predictions.npz"
    mine.write_text("mine\n")
    assert main(["run", str(path), "-q", "--fresh"]) == 0
    assert mine.read_text() == "mine\n"
    assert (directory / "predictions.csv").read_bytes() == first  # retrained with the same seeds


def test_image_run_names_each_rows_file_and_shows_its_confident_mistakes(tmp_path, monkeypatch):
    from PIL import Image

    monkeypatch.setenv("KFOLD_CLR_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    for label in ("cat", "dog"):  # no signal in the pixels: one epoch gets many wrong
        for i in range(10):
            path = tmp_path / "imgs" / label / f"{label}_{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (8, 8, 3)).astype(np.uint8)).save(path)
    experiment = {"name": "imgs", "seed": 3, "output": {"dir": str(tmp_path / "results")},
                  "data": {"source": "images", "path": str(tmp_path / "imgs"), "image_size": [8, 8]},
                  "model": {"kind": "cnn", "filters": [4], "hidden": [8]},
                  "training": {"epochs": 1, "batch_size": 5}, "cv": {"splitter": "stratified", "n_splits": 2},
                  "strategies": {"constant": {"schedule": "constant", "lr": 0.05}}}
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(experiment))
    assert main(["run", str(path), "-q"]) == 0
    directory = tmp_path / "results"
    table = pd.read_csv(directory / "predictions.csv")
    assert len(table) == 20 and table["row"].is_unique
    _, dataset, _, _ = prepare(experiment)
    assert table["file"].tolist() == [dataset.files[row] for row in table["row"]]
    wrong = table["y_true"] != table["y_pred"]
    assert wrong.any() and (directory / "plots" / "confusion_matrix_constant.png").is_file()
    assert (directory / "plots" / "confident_errors_constant.png").is_file()
    assert "Most confidently wrong images (constant)" in (directory / "report.md").read_text()


def test_fused_folds_keep_the_same_predictions(shared_run, tmp_path):
    path, experiment, directory = shared_run
    fused = copy.deepcopy(experiment)
    fused["execution"] = {"fused_folds": True}
    fused["output"] = {"dir": str(tmp_path / "fused")}
    fused_path = tmp_path / "fused.yaml"
    fused_path.write_text(yaml.safe_dump(fused))
    assert main(["run", str(fused_path), "-q"]) == 0
    alone, together = (pd.read_csv(folder / "predictions.csv") for folder in (directory, tmp_path / "fused"))
    fused_rows = pd.read_csv(tmp_path / "fused" / "folds.csv").query("strategy == 'constant'")
    assert fused_rows["fused"].all()  # the carried chain trains fold after fold
    pd.testing.assert_frame_equal(alone[["strategy", "repeat", "fold", "row", "y_true"]],
                                  together[["strategy", "repeat", "fold", "row", "y_true"]])
    probs = [column for column in alone.columns if column.startswith("prob_")]
    np.testing.assert_allclose(together[probs].to_numpy(), alone[probs].to_numpy(), atol=1e-4)
