"""Issue 24, pretrained backbones: a relative `model.weights` is looked up as `data.path` is (the
working directory, then beside the config), a missing one names every place looked, and a changed
weights file is named as such when saved folds are refused."""

import pathlib

import keras
import numpy as np
import pytest
import yaml
from PIL import Image

from kfold_clr.cli.main import main
from kfold_clr.config import DataConfig, validate_config
from kfold_clr.data.datasets import data_file
from kfold_clr.data.images.backbones import resolve_weights
from kfold_clr.errors import ConfigError
from kfold_clr.storage import provenance

TINY = {"backbone": "mobilenet", "params": {"alpha": 0.25}}  # 218k weights: builds in a fraction of a second


def model_config(weights):
    experiment = {"name": "bb", "data": {"source": "synthetic", "name": "classification"},
                  "model": {"kind": "pretrained", **TINY, "weights": weights},
                  "strategies": {"constant": {"schedule": "constant", "lr": 0.01}}}
    return validate_config(experiment).model


def save_weights(path, seed=1):
    keras.utils.set_random_seed(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    keras.applications.MobileNet(include_top=False, weights=None, input_shape=(32, 32, 3), pooling="avg",
                                 alpha=0.25).save_weights(path)
    return path


@pytest.fixture
def places(tmp_path, monkeypatch):
    """A working directory and a config folder apart from it."""
    work, configs = tmp_path / "work", tmp_path / "configs"
    work.mkdir()
    configs.mkdir()
    monkeypatch.chdir(work)
    return work, configs


@pytest.mark.parametrize("where", ["working directory", "beside the config", "both"])
def test_a_relative_weights_path_is_looked_up_as_data_path_is(places, where):
    work, configs = places
    relative = "weights/tiny.weights.h5"
    for folder in {"working directory": [work], "beside the config": [configs], "both": [work, configs]}[where]:
        (folder / relative).parent.mkdir(parents=True)
        (folder / relative).write_bytes(b"weights")
    found = resolve_weights(model_config(relative), configs).weights
    assert found == str(data_file(DataConfig(source="npz", path=relative), base_dir=configs).resolve())
    assert found == str(((configs if where == "beside the config" else work) / relative).resolve())


def test_a_missing_weights_file_names_the_key_the_value_and_every_place_looked(places):
    work, configs = places
    with pytest.raises(ConfigError) as caught:
        resolve_weights(model_config("weights/none.weights.h5"), configs)
    message = str(caught.value)
    assert caught.value.exit_code == 2 and "\n" not in message
    assert message.startswith("model.weights: 'weights/none.weights.h5' is not a file")
    assert str(work / "weights" / "none.weights.h5") in message
    assert str(configs / "weights" / "none.weights.h5") in message
    absolute = str(work / "nowhere.weights.h5")
    with pytest.raises(ConfigError, match=r"looked for '[^']*nowhere.weights.h5'\)"):  # one place: its own
        resolve_weights(model_config(absolute), configs)


def test_validate_exits_2_naming_both_places(places, capsys):
    work, configs = places
    experiment = {"name": "bb", "data": {"source": "synthetic", "name": "classification", "image_shape": [2, 2, 5]},
                  "model": {"kind": "pretrained", **TINY, "weights": "gone.weights.h5"},
                  "strategies": {"constant": {"schedule": "constant", "lr": 0.01}}}
    path = configs / "experiment.yaml"
    path.write_text(yaml.safe_dump(experiment))
    assert main(["validate", str(path)]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "model.weights: 'gone.weights.h5'" in line
    assert str(work / "gone.weights.h5") in line and str(configs / "gone.weights.h5") in line


def image_experiment(tmp_path):
    rng = np.random.default_rng(0)
    for label in ("a", "b"):
        for i in range(6):
            path = tmp_path / "imgs" / label / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (32, 32, 3)).astype(np.uint8)).save(path)
    return {"name": "bb", "seed": 0, "data": {"source": "images", "path": "imgs", "image_size": [32, 32]},
            "model": {"kind": "pretrained", **TINY, "weights": "tiny.weights.h5", "hidden": [4]},
            "training": {"epochs": 1, "batch_size": 4}, "cv": {"splitter": "stratified", "n_splits": 2},
            "strategies": {"constant": {"schedule": "constant", "lr": 0.01}}, "output": {"dir": "results"}}


def test_the_changed_part_is_the_weights_file_not_the_data(tmp_path, monkeypatch):
    from kfold_clr.planning.preflight import prepare

    monkeypatch.setenv("KFOLD_CLR_CACHE", str(tmp_path / "cache"))
    experiment = image_experiment(tmp_path)
    weights = save_weights(tmp_path / "tiny.weights.h5", seed=1)
    (tmp_path / "experiment.yaml").write_text(yaml.safe_dump(experiment))

    def fingerprint():
        from kfold_clr.config import load_config

        config, dataset, _, _ = prepare(load_config(tmp_path / "experiment.yaml"))
        return provenance.strategy_fingerprint(config, dataset, "constant")

    before = fingerprint()
    saved = provenance.fingerprint_parts(before)
    assert fingerprint() == before
    save_weights(weights, seed=2)  # the same file, other weights
    after = fingerprint()
    assert after != before
    change = provenance.describe_change(saved, after)
    assert change == f"backbone weights file {weights.resolve()} changed"
    (tmp_path / "imgs" / "a" / "0.png").unlink()  # the images change too: both are named
    both = provenance.describe_change(saved, fingerprint())
    assert f"backbone weights file {weights.resolve()} changed" in both and "the data changed" in both


@pytest.mark.slow
def test_a_rerun_after_the_weights_file_changed_says_so(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("KFOLD_CLR_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    experiment = image_experiment(tmp_path)
    weights = save_weights(tmp_path / "tiny.weights.h5", seed=1)
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(experiment))
    assert main(["run", str(path), "-q"]) == 0
    save_weights(weights, seed=2)
    capsys.readouterr()
    assert main(["run", str(path), "-q"]) == 2
    (line,) = [line for line in capsys.readouterr().err.splitlines() if "output.dir" in line]
    assert f"(backbone weights file {pathlib.Path(weights).resolve()} changed)" in line and "the data" not in line
