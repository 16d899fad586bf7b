"""The parquet and images sources: what they load, what they refuse, and a CNN on a folder of images."""

import sys

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from kfold_clr.config import DataConfig, load_config
from kfold_clr.data.datasets import data_file, load_dataset
from kfold_clr.errors import ConfigError, DataError, ResultsError

CLASSES = ("b_dog", "a_cat", "c_fox")  # written in this order; the labels follow the sorted names


@pytest.fixture(autouse=True)
def _image_cache(tmp_path_factory, monkeypatch):
    """Decoded pixels go to a folder of this test's own, not ~/.cache."""
    monkeypatch.setenv("KFOLD_CLR_CACHE", str(tmp_path_factory.mktemp("cache")))


def data_cfg(**kwargs):
    return DataConfig.model_validate(kwargs)


def draw(path, pixels):
    """Save uint8 `pixels` ((h, w) grayscale or (h, w, 3) RGB) as PNG or JPEG, by the suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(pixels, dtype=np.uint8)).save(path)
    return path


def image_folder(root, *, per_class=6, size=(8, 8)):
    """3 classes x `per_class` images: PNG and JPEG, one grayscale, one upper-case suffix,
    plus files and folders that are not images (hidden, text) and must be ignored."""
    rng = np.random.default_rng(0)
    for label, name in enumerate(CLASSES):
        for i in range(per_class):
            pixels = rng.integers(0, 256, size=(*size, 3)) // 4 + 60 * label
            suffix = ".png" if i % 2 == 0 else ".jpg"
            if name == "a_cat" and i == 0:
                pixels = pixels[..., 0]  # grayscale
            if name == "c_fox" and i == 1:
                suffix = ".JPEG"
            draw(root / name / f"{i:02d}{suffix}", pixels)
        (root / name / "notes.txt").write_text("not an image")
        (root / name / ".hidden.png").write_bytes(b"not read")
    (root / ".thumbnails").mkdir()
    draw(root / ".thumbnails" / "x.png", np.zeros((2, 2)))  # a hidden folder is not a class
    (root / "LICENSE.txt").write_text("a file beside the class folders")
    return root


def images_cfg(path, **changes):
    return data_cfg(source="images", path=str(path), image_size=[8, 8], **changes)


# ----------------------------------------------------------------------------- images
def test_images_load_as_read_only_uint8_pixels_with_sorted_class_labels(tmp_path):
    dataset = load_dataset(images_cfg(image_folder(tmp_path / "imgs")))
    assert dataset.x.shape == (18, 8, 8, 3) and dataset.x.dtype == np.uint8
    assert isinstance(dataset.x, np.memmap) and not dataset.x.flags.writeable
    assert dataset.files[:2] == ["a_cat/00.png", "a_cat/01.jpg"] and len(dataset.files) == 18
    assert dataset.class_names == ["a_cat", "b_dog", "c_fox"] and dataset.n_outputs == 3
    np.testing.assert_array_equal(dataset.y, np.repeat([0, 1, 2], 6))
    assert dataset.task == "classification" and dataset.groups is None
    assert "18 images in 3 classes: a_cat 6, b_dog 6, c_fox 6" in dataset.description
    assert "resized to 8x8 rgb" in dataset.description


def test_pixels_are_the_image_in_height_width_channel_order(tmp_path):
    pixels = np.random.default_rng(1).integers(0, 256, size=(4, 6, 3))  # 4 high, 6 wide
    for name in ("cat", "dog"):
        draw(tmp_path / name / "a.png", pixels)
    dataset = load_dataset(data_cfg(source="images", path=str(tmp_path), image_size=[4, 6]))
    np.testing.assert_array_equal(dataset.x[0], pixels)


def test_every_image_is_resized_with_pillow(tmp_path):
    folder = image_folder(tmp_path / "imgs")
    dataset = load_dataset(data_cfg(source="images", path=str(folder), image_size=[4, 6]))
    assert dataset.x.shape == (18, 4, 6, 3)
    expected = Image.open(folder / "b_dog" / "00.png").convert("RGB").resize((6, 4), Image.Resampling.BILINEAR)
    np.testing.assert_array_equal(dataset.x[6], np.asarray(expected))


def test_color_modes(tmp_path):
    folder = image_folder(tmp_path / "imgs")
    gray = load_dataset(images_cfg(folder, color_mode="grayscale"))
    assert gray.x.shape == (18, 8, 8, 1)
    expected = np.asarray(Image.open(folder / "b_dog" / "00.png").convert("L"))
    np.testing.assert_array_equal(gray.x[6, ..., 0], expected)
    rgb = load_dataset(images_cfg(folder)).x[0]  # a_cat/00.png is grayscale
    np.testing.assert_array_equal(rgb[..., 0], rgb[..., 1])
    np.testing.assert_array_equal(rgb[..., 0], rgb[..., 2])


@pytest.mark.parametrize("changes, image_shape", [
    ({}, [8, 8, 3]), ({"color_mode": "grayscale"}, [8, 8, 1]), ({"image_shape": [64, 3]}, [64, 3])])
def test_image_shape_follows_image_size_and_color_mode(tmp_path, changes, image_shape):
    from kfold_clr.data.splits import make_splits
    from kfold_clr.training.trainer import prepare_fold

    cfg = images_cfg(image_folder(tmp_path / "imgs"), **changes)
    assert cfg.image_shape == image_shape and cfg.color_mode == changes.get("color_mode", "rgb")
    dataset = load_dataset(cfg)
    split = make_splits(dataset, splitter="stratified", n_splits=2, n_repeats=1, shuffle=True, seed=0)[0]
    x_train, _, x_val, _ = prepare_fold(dataset, split, cfg)
    assert x_train.shape[1:] == x_val.shape[1:] == tuple(image_shape)


def test_content_hash_changes_when_any_image_changes(tmp_path):
    folder = image_folder(tmp_path / "imgs", size=(16, 16))
    cfg = data_cfg(source="images", path=str(folder), image_size=[4, 4])
    before = load_dataset(cfg).content_hash()
    assert load_dataset(cfg).content_hash() == before
    path = folder / "c_fox" / "04.png"
    pixels = np.asarray(Image.open(path)).copy()
    pixels[0, 0, 0] ^= 1  # one level of one pixel: may vanish in the 4x4 resize, not in the hash
    draw(path, pixels)
    assert load_dataset(cfg).content_hash() != before


def test_data_file_is_the_image_folder_and_protects_it(tmp_path):
    from kfold_clr.storage.ownership import check_output_dir

    folder = image_folder(tmp_path / "imgs")
    cfg = data_cfg(source="images", path="imgs", image_size=[8, 8])
    assert data_file(cfg, base_dir=tmp_path) == folder
    for output in (folder, tmp_path):
        with pytest.raises(ResultsError, match="contains .*imgs, an input of this run"):
            check_output_dir(output, protected=[data_file(cfg, base_dir=tmp_path)])


def write_broken(folder, relative, content):
    (folder / relative).write_bytes(content)


def truncated_jpeg(folder):
    path = folder / "b_dog" / "01.jpg"
    path.write_bytes(path.read_bytes()[:60])


@pytest.mark.parametrize("damage, expected", [
    (lambda f: None, None),
    (lambda f: write_broken(f, "a_cat/02.png", b"not a png"),
     r"data.path: image 'a_cat/02.png' cannot be read \(not an image Pillow recognises\)"),
    (truncated_jpeg, r"data.path: image 'b_dog/01.jpg' cannot be read"),
], ids=["intact", "corrupt png", "truncated jpeg"])
def test_an_unreadable_image_is_named(tmp_path, damage, expected):
    folder = image_folder(tmp_path / "imgs")
    damage(folder)
    if expected is None:
        assert load_dataset(images_cfg(folder)).n_samples == 18
        return
    with pytest.raises(DataError, match=expected) as error:
        load_dataset(images_cfg(folder))
    assert "\n" not in str(error.value)


def one_class(root):
    draw(root / "cat" / "a.png", np.zeros((4, 4)))
    (root / ".git").mkdir()


def class_without_images(root):
    draw(root / "cat" / "a.png", np.zeros((4, 4)))
    (root / "dog").mkdir()
    (root / "dog" / "a.gif").write_bytes(b"GIF89a")
    (root / "dog" / ".b.png").write_bytes(b"hidden")


def a_file(root):
    root.rmdir()
    root.write_text("a,b\n1,2\n")


@pytest.mark.parametrize("layout, expected", [
    (one_class, r"data.path: '.*imgs' holds 1 class folder \('cat'\); source 'images' needs one subfolder"),
    (lambda root: None, r"data.path: '.*imgs' holds 0 class folder;"),
    (class_without_images, r"data.path: class folder 'dog' of '.*imgs' holds no images \(.png, .jpg, .jpeg\)"),
    (a_file, r"data.path: '.*imgs' is a file; source 'images' reads a folder"),
    (lambda root: root.rmdir(), r"data.path: '.*imgs' does not exist"),
], ids=["one class", "no class", "class without images", "a file", "missing"])
def test_bad_image_folders_are_one_line_data_errors(tmp_path, layout, expected):
    root = tmp_path / "imgs"
    root.mkdir()
    layout(root)
    with pytest.raises(DataError, match=expected) as error:
        load_dataset(images_cfg(root))
    assert "\n" not in str(error.value)


def experiment(data, tmp_path, **changes):
    return {"name": "imgs", "data": data, "model": {"kind": "cnn", "filters": [4], "hidden": [8]},
            "training": {"epochs": 1, "batch_size": 4}, "cv": {"splitter": "stratified", "n_splits": 2},
            "strategies": {"constant": {"schedule": "constant", "lr": 0.05}},
            "output": {"dir": str(tmp_path / "out")}, **changes}


@pytest.mark.parametrize("data, expected", [
    ({"source": "images", "path": "imgs"}, r"^data.image_size: None must be \[height, width\]"),
    ({"source": "images", "path": "imgs", "image_size": [8]}, r"^data.image_size: \[8\] must have at least 2"),
    ({"source": "images", "path": "imgs", "image_size": [8, 0]}, r"^data.image_size.1: 0 must be >= 1"),
    ({"source": "images", "path": "imgs", "image_size": [8, 8], "color_mode": "cmyk"},
     r"^data.color_mode: 'cmyk' is not one of rgb, grayscale"),
    ({"source": "images", "path": "imgs", "image_size": [8, 8], "target": "label"},
     r"^data.target: 'label' must be omitted unless data.table names a CSV of the images"),
    ({"source": "images", "path": "imgs", "image_size": [8, 8], "task": "regression"},
     r"^data.task: 'regression' must be auto or classification for source 'images'"),
    ({"source": "images", "image_size": [8, 8]}, r"^data.path: None must be a folder of class folders"),
    ({"source": "csv", "path": "d.csv", "target": "y", "image_size": [8, 8]},
     r"^data.image_size: \[8, 8\] must be omitted unless source is 'images'"),
    ({"source": "parquet", "path": "d.parquet"}, r"^data.target: None must be the name of the target column"),
])
def test_bad_image_and_parquet_keys_are_named(tmp_path, data, expected):
    with pytest.raises(ConfigError, match=expected) as error:
        load_config(experiment(data, tmp_path))
    assert "\n" not in str(error.value)


@pytest.mark.slow
def test_a_cnn_trains_on_an_image_folder_without_image_shape(tmp_path):
    from kfold_clr.execution.experiment import run_experiment

    image_folder(tmp_path / "imgs")
    data = {"source": "images", "path": str(tmp_path / "imgs"), "image_size": [8, 8]}
    results = run_experiment(experiment(data, tmp_path), verbosity=0)
    assert len(results.folds) == 2 and (results.folds["status"] == "ok").all()
    resolved = yaml.safe_load((tmp_path / "out" / "config.yaml").read_text())
    assert resolved["data"]["image_shape"] == [8, 8, 3] and resolved["data"]["color_mode"] == "rgb"


# ----------------------------------------------------------------------------- parquet
TABLE = pd.DataFrame({"a": np.arange(12.0), "b": np.linspace(0, 1, 12), "g": list("aabbccddeeff"),
                      "label": ["yes", "no"] * 6})


def test_the_same_table_as_csv_and_parquet_gives_the_same_dataset(tmp_path):
    TABLE.to_csv(tmp_path / "t.csv", index=False)
    TABLE.to_parquet(tmp_path / "t.parquet", index=False)
    settings = {"target": "label", "groups": "g", "features": ["b", "a"]}
    from_csv = load_dataset(data_cfg(source="csv", path=str(tmp_path / "t.csv"), **settings))
    from_parquet = load_dataset(data_cfg(source="parquet", path=str(tmp_path / "t.parquet"), **settings))
    for name in ("x", "y", "groups"):
        np.testing.assert_array_equal(getattr(from_csv, name), getattr(from_parquet, name))
    assert from_parquet.x.shape == (12, 2) and from_parquet.class_names == from_csv.class_names == ["no", "yes"]
    assert (from_parquet.task, from_parquet.n_outputs) == (from_csv.task, from_csv.n_outputs)
    assert from_parquet.content_hash() == from_csv.content_hash()
    assert from_parquet.description.startswith("t.parquet (12 rows, 2 features, target 'label')")


def test_parquet_keeps_its_dtypes(tmp_path):
    frame = pd.DataFrame({"flag": [True, False] * 5, "n": pd.array(range(10), dtype="Int64"),
                          "y": np.linspace(0.5, 3.7, 10)})
    frame.to_parquet(tmp_path / "d.parquet")
    dataset = load_dataset(data_cfg(source="parquet", path=str(tmp_path / "d.parquet"), target="y"))
    assert dataset.task == "regression" and dataset.x.shape == (10, 2)
    np.testing.assert_array_equal(dataset.x[:, 0], [1, 0] * 5)


@pytest.mark.parametrize("frame, cfg, expected", [
    (pd.DataFrame({"a": [1, 2], "y": [0, 1]}), {"target": "label"},
     r"data.target: column 'label' is not in d.parquet \(columns: a, y\)"),
    (pd.DataFrame({"a": [1, 2], "y": [0, 1]}), {"target": "y", "groups": "g"}, "data.groups: column 'g'"),
    (pd.DataFrame({"a": [1, 2], "y": [0, 1]}), {"target": "y", "features": ["a", "c"]}, "data.features: column 'c'"),
    (pd.DataFrame({"a": [1.0, np.nan, 3.0], "b": [1.0, 2.0, np.inf], "y": [0, 1, 0]}), {"target": "y"},
     r"in 2 of 3 samples \('a': row 1; 'b': row 2\)"),
    (pd.DataFrame({"a": pd.array([1, None, 3], dtype="Int64"), "y": [0, 1, 0]}), {"target": "y"},
     r"contain NaN, .* \('a': row 1\)"),
    (pd.DataFrame({"a": [1.0, 2.0, 3.0], "y": [0, None, 1]}), {"target": "y"}, r"missing target values \(row 1\)"),
    (pd.DataFrame({"a": ["1", "x", "3"], "y": [0, 1, 0]}), {"target": "y"},
     r"data.features: column 'a' of d.parquet is not numeric \(e.g. 'x' in row 1\); encode it or leave it out"),
    (pd.DataFrame({"a": ["u", "v", "w"], "b": [1, 2, 3], "c": pd.Categorical(["p", "q", "p"]), "y": [0, 1, 0]}),
     {"target": "y"}, r"data.features: columns 'a', 'c' of d.parquet are not numeric \('a': e.g. 'u' in row 0\); "
                      "encode them or leave them out with data.features"),
    (pd.DataFrame({"when": pd.date_range("2024-01-01", periods=3), "y": [0, 1, 0]}), {"target": "y"},
     r"column 'when' of d.parquet is not numeric \(dtype datetime64"),
    (pd.DataFrame({"y": [0, 1]}), {"target": "y"}, "no feature columns"),
    (pd.DataFrame({"a": [1, 2, 3], "y": ["s", "s", "s"]}), {"target": "y"}, "single class"),
    (pd.DataFrame({"a": pd.Series([], dtype=float), "y": pd.Series([], dtype=int)}), {"target": "y"},
     "has columns but no rows"),
], ids=["target", "groups", "features", "nan and inf", "nullable NA", "missing target", "string", "two columns",
        "datetime", "no features", "single class", "no rows"])
def test_bad_parquet_gives_the_csv_checks(tmp_path, frame, cfg, expected):
    frame.to_parquet(tmp_path / "d.parquet")
    with pytest.raises(DataError, match=expected) as error:
        load_dataset(data_cfg(source="parquet", path=str(tmp_path / "d.parquet"), **cfg))
    assert "\n" not in str(error.value)


def test_unreadable_or_missing_parquet(tmp_path):
    (tmp_path / "junk.parquet").write_text("a,b\n1,2\n")
    with pytest.raises(DataError, match=r"data.path: '.*junk.parquet' is not a readable Parquet file \("):
        load_dataset(data_cfg(source="parquet", path=str(tmp_path / "junk.parquet"), target="b"))
    with pytest.raises(DataError, match="data.path: 'none.parquet' does not exist"):
        load_dataset(data_cfg(source="parquet", path="none.parquet", target="b"), base_dir=tmp_path)


def test_parquet_without_pyarrow_says_what_to_install(tmp_path, monkeypatch):
    TABLE.to_parquet(tmp_path / "t.parquet")
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # `import pyarrow` now fails
    with pytest.raises(DataError) as error:
        load_dataset(data_cfg(source="parquet", path=str(tmp_path / "t.parquet"), target="label"))
    assert str(error.value) == ("data.source: 'parquet' needs pyarrow, which is not installed; "
                                'pip install "kfold-clr[parquet]"')


def test_an_output_folder_inside_the_image_folder_is_refused(tmp_path):
    from kfold_clr.errors import ResultsError
    from kfold_clr.storage.ownership import check_output_dir

    (tmp_path / "imgs" / "a").mkdir(parents=True)
    with pytest.raises(ResultsError, match="is inside .*imgs, the data folder of this run"):
        check_output_dir(tmp_path / "imgs" / "out", data_folder=tmp_path / "imgs")
    assert check_output_dir(tmp_path / "out", data_folder=tmp_path / "imgs") == (tmp_path / "out").resolve()
