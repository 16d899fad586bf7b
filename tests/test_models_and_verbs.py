"""CNNs, user factories, early stopping, and the range-test / report verbs end to end."""

import copy
import textwrap

import pandas as pd
import pytest

from kfold_clr.cli.main import main
from kfold_clr.execution.experiment import run_experiment

pytestmark = pytest.mark.slow

DIGITS = {"source": "sklearn", "name": "digits"}


def quick(tmp_path, **changes):
    experiment = {"name": "quick", "data": dict(DIGITS), "training": {"epochs": 1, "batch_size": 64},
                  "cv": {"n_splits": 2}, "strategies": {"constant": {"schedule": "constant", "lr": 0.05}},
                  "output": {"dir": str(tmp_path / "out")}}
    experiment.update(copy.deepcopy(changes))
    return experiment


@pytest.mark.parametrize("image_shape", [[8, 8, 1], [64, 1]], ids=["2-D", "1-D"])
def test_cnn_trains_on_images_and_sequences(tmp_path, image_shape):
    experiment = quick(tmp_path, data={**DIGITS, "image_shape": image_shape},
                       model={"kind": "cnn", "filters": [8], "hidden": [16]},
                       training={"epochs": 3, "batch_size": 32})
    folds = run_experiment(experiment, verbosity=0).folds
    assert (folds["status"] == "ok").all() and (folds["val_accuracy"] > 0.5).all()  # chance is 0.1


def test_factory_model_is_called_with_shape_outputs_and_params(tmp_path, monkeypatch):
    (tmp_path / "my_models.py").write_text(textwrap.dedent('''
        import keras

        CALLS = []

        def tiny(input_shape, n_outputs, width=4):
            CALLS.append((input_shape, n_outputs, width))
            inputs = keras.Input(input_shape)
            hidden = keras.layers.Dense(width, activation="relu")(inputs)
            return keras.Model(inputs, keras.layers.Dense(n_outputs, activation="softmax")(hidden))
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    experiment = quick(tmp_path, model={"factory": "my_models:tiny", "params": {"width": 7}})
    folds = run_experiment(experiment, verbosity=0).folds
    import my_models

    assert (folds["status"] == "ok").all()
    assert my_models.CALLS[-1] == ((64,), 10, 7)


def test_factory_returning_a_wrong_model_is_caught_before_any_result(tmp_path, monkeypatch, write_yaml, capsys):
    (tmp_path / "bad_models.py").write_text("def nothing(input_shape, n_outputs):\n    return 42\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    path = write_yaml(quick(tmp_path, model={"factory": "bad_models:nothing"}))
    assert main(["run", str(path), "-q"]) == 2
    assert "model.factory: 'bad_models:nothing' returned int, not a keras.Model" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_early_stopping_marks_rows_optimistic(tmp_path):
    experiment = quick(tmp_path, training={"epochs": 6, "batch_size": 64,
                                           "early_stopping": {"patience": 1}})
    folds = run_experiment(experiment, verbosity=0).folds
    assert folds["optimistic"].all()
    report = (tmp_path / "out" / "report.md").read_text()
    assert "optimistic" in report.lower()


def test_range_test_verb_writes_csv_png_and_sensible_bounds(tmp_path, write_yaml, capsys):
    experiment = quick(tmp_path, data={"source": "sklearn", "name": "iris"}, model={"hidden": [16]},
                       training={"batch_size": 8},
                       range_test={"min_lr": 1e-4, "max_lr": 10.0, "epochs": 6, "smoothing": "window", "window": 5})
    assert main(["range-test", str(write_yaml(experiment)), "--fold", "1"]) == 0
    out = capsys.readouterr().out
    folder = tmp_path / "out" / "range_test" / "r0_f1"
    curve = pd.read_csv(folder / "range_test.csv")
    assert (folder / "range_test.png").stat().st_size > 10_000
    assert {"lr", "loss", "smoothed_loss"} <= set(curve.columns) and curve["lr"].is_monotonic_increasing
    assert "base_lr:" in out and "max_lr:" in out
    import yaml

    snippet = yaml.safe_load(out.split("Paste into a strategy:")[1].split("wrote")[0])
    assert 1e-4 <= snippet["base_lr"] < snippet["max_lr"] <= 10.0


def test_range_test_verb_rejects_a_fold_out_of_range(tmp_path, write_yaml, capsys):
    assert main(["range-test", str(write_yaml(quick(tmp_path))), "--fold", "7"]) == 2
    assert "--fold: 7 must be between 0 and 1" in capsys.readouterr().err


def test_report_verb_rebuilds_and_rejects_damaged_directories(tmp_path, capsys):
    run_experiment(quick(tmp_path, strategies={"a": {"schedule": "constant", "lr": 0.05},
                                               "b": {"schedule": "constant", "lr": 0.01}}), verbosity=0)
    out = tmp_path / "out"
    (out / "report.md").unlink()
    assert main(["report", str(out)]) == 0 and (out / "report.md").exists()
    (out / "folds.csv").write_text("strategy,repeat\nx,not-a-number\n")
    assert main(["report", str(out)]) == 2
    assert "folds.csv" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "nowhere")]) == 2


def test_a_run_ends_with_a_summary_and_a_rerun_says_nothing_was_left(tiny_experiment, write_yaml, capsys):
    path = write_yaml(tiny_experiment)
    assert main(["run", str(path), "-q"]) == 0
    err = capsys.readouterr().err
    out = tiny_experiment["output"]["dir"]
    assert "kfold-clr: 9 folds: 9 ok, 0 diverged, 0 failed (trained 9 in this run;" in err
    assert f"results: {out}" in err and f"report:  {out}/report.md" in err
    assert "key comparisons (accuracy, A - B):" in err and "constant vs clr_reset" in err
    assert main(["run", str(path), "-q"]) == 0
    assert "(all were saved before: nothing to train;" in capsys.readouterr().err


def test_the_progress_line_keeps_its_count_and_time_left_at_80_columns():
    import numpy as np
    from rich.console import Console

    from kfold_clr.data.splits import Split
    from kfold_clr.execution.progress import RunProgress
    from kfold_clr.training.fold_plans import FoldPlan

    progress = RunProgress(1200, verbosity=1)
    progress.console = Console(width=80, record=True, force_terminal=True, color_system=None)
    plan = FoldPlan("a_rather_long_strategy_name", Split(2, 4, np.arange(3), np.arange(2)), 1, 5, 30)
    with progress:
        progress.epoch_done(plan, 7, {"loss": 0.123456, "val_loss": 0.2345678, "accuracy": 0.9, "lr": 0.01})
        progress._progress.refresh()
        text = progress.console.export_text()
    renders = [part + "left" for part in text.replace("\n", "").split("left") if part.strip()]
    assert "a_rather_long_strategy_nam" in renders[-1] and "1/1200 epochs" in renders[-1]
    assert all(len(render) <= 80 for render in renders)
