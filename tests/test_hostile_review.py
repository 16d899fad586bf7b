"""Cases a hostile review found in the image path, the tuning API and the notebook API."""

import warnings

import numpy as np
import pytest

from kfold_clr.cli.main import main
from kfold_clr.config import DataConfig, load_config
from kfold_clr.data.datasets import load_dataset
from kfold_clr.data.splits import make_splits
from kfold_clr.errors import ConfigError, DataError


def make_folder(root, *, per_class=6):
    """Two class folders of tiny RGB PNGs."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for label in range(2):
        (root / f"c{label}").mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 255, (8, 8, 3)).astype(np.uint8)).save(root / f"c{label}" / f"{i}.png")
    return root


def _images_experiment(tmp_path, **data):
    return {"name": "imgs", "data": {"source": "images", "path": str(tmp_path / "imgs"), "image_size": [8, 8],
                                     **data},
            "model": {"kind": "cnn", "filters": [2], "hidden": [4]},
            "training": {"epochs": 1, "batch_size": 8}, "cv": {"n_splits": 2},
            "strategies": {"constant": {"schedule": "constant", "lr": 0.01}},
            "output": {"dir": str(tmp_path / "results")}}


@pytest.mark.parametrize("where", ["config folder", "working directory", "folder above the images"])
def test_a_cache_in_a_shared_folder_is_refused_before_anything_is_written(tmp_path, monkeypatch, where):
    make_folder(tmp_path / "data" / "imgs")
    monkeypatch.chdir(tmp_path)
    cache = {"config folder": str(tmp_path), "working directory": ".", "folder above the images": "data"}[where]
    with pytest.raises(DataError, match=r"data.cache: .* is (the folder holding the config|the working directory|"
                                        r"a folder holding the images)"):
        load_dataset(DataConfig.model_validate({"source": "images", "path": "data/imgs", "image_size": [8, 8],
                                                "cache": cache}), base_dir=tmp_path)
    assert not list(tmp_path.glob("*.npy")) and not list((tmp_path / "data").glob("*.npy"))


def test_a_cache_inside_the_results_folder_is_refused_before_it_is_written(tmp_path, write_yaml, capsys):
    make_folder(tmp_path / "imgs")
    experiment = _images_experiment(tmp_path, cache=str(tmp_path / "results"))
    assert main(["run", str(write_yaml(experiment))]) == 2
    assert "output.dir" in capsys.readouterr().err
    assert not (tmp_path / "results").exists()  # nothing written: the folder stays usable


def test_a_folder_in_place_of_the_cache_file_is_one_line(tmp_path):
    folder = make_folder(tmp_path / "imgs")
    cfg = DataConfig.model_validate({"source": "images", "path": str(folder), "image_size": [8, 8],
                                     "cache": str(tmp_path / "cache")})
    dataset = load_dataset(cfg)
    path = tmp_path / "cache" / f"{dataset.source_digest}.npy"
    del dataset
    path.unlink()
    path.mkdir()
    with pytest.raises(DataError, match="is not a file kfold_clr wrote"):
        load_dataset(cfg)


def test_an_empty_augment_section_augments_nothing(tmp_path):
    (tmp_path / "imgs").mkdir()
    config = load_config(_images_experiment(tmp_path, augment={}))
    assert config.data.augment is None


def test_image_size_is_bounded(tmp_path):
    (tmp_path / "imgs").mkdir()
    with pytest.raises(ConfigError, match="data.image_size"):
        load_config(_images_experiment(tmp_path, image_size=[20000, 20000]))


def test_groups_with_a_splitter_that_ignores_them_warn(tmp_path):
    from kfold_clr.data.datasets import Dataset

    dataset = Dataset(x=np.zeros((20, 2), np.float32), y=np.arange(20) % 2, groups=np.arange(20) // 4,
                      task="classification", n_outputs=2, class_names=np.array([0, 1]))
    with pytest.warns(UserWarning, match="ignores the data's groups"):
        make_splits(dataset, splitter="stratified", n_splits=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        make_splits(dataset, splitter="stratified_group", n_splits=2)


@pytest.mark.parametrize("arguments, message", [
    ({"fresh": "no"}, "`fresh` must be True or False"),
    ({"verbose": 5}, "`verbose` must be 0, 1 or 2"),
    ({"verbose": -1}, "`verbose` must be 0, 1 or 2"),
])
def test_cross_validate_refuses_arguments_of_the_wrong_kind(tmp_path, arguments, message):
    import kfold_clr

    x, y = np.zeros((20, 3), np.float32), np.arange(20) % 2
    with pytest.raises(ValueError, match=message):
        kfold_clr.cross_validate("nowhere:model", x, y, strategies={"c": {"schedule": "constant", "lr": 0.1}},
                                 epochs=1, batch_size=4, output_dir=tmp_path / "r", **arguments)
