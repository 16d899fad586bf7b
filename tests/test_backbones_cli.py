"""A pretrained backbone through the command line (issue 24, item 4): on a generated driver
folder, a frozen backbone's features are computed once and the heads of every fold and strategy
train fused on them; imagenet weights offline stop `validate` with exit 2."""

import importlib.util
import pathlib
import urllib.error

import keras
import pandas as pd
import pytest
import yaml

from kfold_clr.cli.main import main
from kfold_clr.data.images import features
from kfold_clr.report import markdown

ROOT = pathlib.Path(__file__).resolve().parents[1]
REPORTED = pytest.mark.skipif("pretrained" not in markdown.MODEL_SETTINGS,
                              reason="report/markdown.py does not describe model.kind 'pretrained' yet")


def image_folder_module():
    spec = importlib.util.spec_from_file_location("image_folder", ROOT / "benchmarks" / "image_folder.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def drivers(tmp_path, monkeypatch):
    """A 36-image, 3-class, 6-driver folder at 32 x 32, a tiny weights file and a private cache."""
    monkeypatch.setenv("KFOLD_CLR_CACHE", str(tmp_path / "cache"))
    image_folder_module().make_image_folder(tmp_path / "drivers", n=36, size=32, classes=3, drivers=6, seed=0)
    keras.applications.MobileNet(include_top=False, weights=None, input_shape=(32, 32, 3), pooling="avg",
                                 alpha=0.25).save_weights(tmp_path / "tiny.weights.h5")
    return tmp_path


def experiment(folder, **model):
    return {"name": "drivers", "seed": 0,
            "data": {"source": "images", "path": str(folder / "drivers" / "imgs" / "train"),
                     "table": str(folder / "drivers" / "driver_imgs_list.csv"), "file_column": "img",
                     "groups": "subject", "image_size": [32, 32]},
            "model": {"kind": "pretrained", "backbone": "mobilenet", "params": {"alpha": 0.25},
                      "weights": str(folder / "tiny.weights.h5"), "hidden": [8], **model},
            "training": {"epochs": 2, "batch_size": 8},
            "cv": {"splitter": "group", "n_splits": 3},
            "strategies": {"constant": {"schedule": "constant", "lr": 0.01},
                           "clr": {"schedule": "clr", "base_lr": 0.001, "max_lr": 0.05, "step_size_epochs": 1}},
            "output": {"dir": str(folder / "results")}}


@REPORTED
@pytest.mark.slow
def test_heads_train_fused_on_features_computed_once(drivers, write_yaml, monkeypatch):
    passes = []
    real_compute = features._compute
    monkeypatch.setattr(features, "_compute", lambda *a, **k: passes.append(1) or real_compute(*a, **k))
    path = write_yaml(experiment(drivers))
    assert main(["run", str(path), "-q"]) == 0
    assert passes == [1] and len(list((drivers / "cache" / "images" / "features").glob("*.npy"))) == 1
    folds = pd.read_csv(drivers / "results" / "folds.csv")
    assert len(folds) == 6 and (folds["status"] == "ok").all()
    assert folds["fused"].astype(str).str.lower().eq("true").all()
    saved = yaml.safe_load((drivers / "results" / "config.yaml").read_text())
    assert saved["data"]["image_shape"] is None and saved["model"]["kind"] == "pretrained"
    assert main(["run", str(path), "-q", "--fresh"]) == 0
    assert passes == [1]  # the second run read the cached features


def test_imagenet_weights_offline_exit_2_with_where_to_put_the_file(drivers, write_yaml, monkeypatch, capsys):
    from keras.src.backend import config as keras_config
    from keras.src.utils import file_utils

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(keras_config, "keras_home", lambda: str(drivers / "keras"))
    monkeypatch.setattr(file_utils, "urlretrieve", offline)
    path = write_yaml(experiment(drivers, weights="imagenet"))
    assert main(["validate", str(path)]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "model.weights: 'imagenet' weights of backbone 'mobilenet' are not in Keras's cache" in error
    assert str(drivers / "keras" / "models") in error and "Traceback" not in error
    assert not (drivers / "results").exists()


@pytest.mark.parametrize("change, message", [
    ({"model": {"trainable": 2000}}, "model.trainable: 2000 must be at most the"),
    ({"data": {"image_size": [16, 16]}}, "data.image_size: [16, 16] is too small for backbone 'mobilenet' "
                                         "(at least 32 x 32)"),
    ({"model": {"weights": "missing.weights.h5"}}, "model.weights: 'missing.weights.h5' is not a file"),
])
def test_bad_backbone_settings_stop_validate_with_exit_2(drivers, write_yaml, capsys, change, message):
    settings = experiment(drivers)
    for section, values in change.items():
        settings[section].update(values)
    assert main(["validate", str(write_yaml(settings))]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert message in error and "Traceback" not in error
