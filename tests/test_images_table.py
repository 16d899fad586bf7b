"""Labels and groups of an image set from a table: matching rows to images, every error named,
and group splitters keeping each group in one validation fold."""

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from kfold_clr.config import DataConfig, load_config
from kfold_clr.data.datasets import load_dataset
from kfold_clr.errors import ConfigError, DataError


@pytest.fixture(autouse=True)
def _image_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("KFOLD_CLR_CACHE", str(tmp_path_factory.mktemp("cache")))


def flat_folder(root, n=12):
    """`n` images directly in `root` (no class folders), and the table of their labels and subjects."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        name = f"img_{i:02d}.png"
        Image.fromarray(rng.integers(0, 256, (4, 4, 3)).astype(np.uint8)).save(root / name) if root.exists() else None
        rows.append({"img": name, "label": "dog" if i % 3 else "cat", "subject": f"s{i % 4}"})
    return pd.DataFrame(rows)


def setup(tmp_path, n=12):
    folder = tmp_path / "imgs"
    folder.mkdir()
    table = flat_folder(folder, n)
    return folder, table


def images_cfg(folder, table_path, **changes):
    settings = {"source": "images", "path": str(folder), "image_size": [4, 4], "table": str(table_path),
                "file_column": "img", "target": "label", **changes}
    return DataConfig.model_validate({k: v for k, v in settings.items() if v is not None})


def test_labels_and_groups_come_from_the_table_of_a_flat_folder(tmp_path):
    folder, table = setup(tmp_path)
    table.sample(frac=1.0, random_state=1).to_csv(tmp_path / "train.csv", index=False)  # any row order
    dataset = load_dataset(images_cfg(folder, tmp_path / "train.csv", groups="subject"))
    assert dataset.files == sorted(table["img"])
    expected = table.set_index("img").loc[dataset.files]
    assert dataset.class_names == ["cat", "dog"]
    np.testing.assert_array_equal(np.array(dataset.class_names)[dataset.y], expected["label"])
    np.testing.assert_array_equal(dataset.groups, expected["subject"])
    assert "labels from train.csv column 'label'" in dataset.description
    first = Image.open(folder / dataset.files[0]).convert("RGB")
    np.testing.assert_array_equal(dataset.x[0], np.asarray(first))


def test_a_table_may_name_paths_under_class_folders_and_take_labels_from_them(tmp_path):
    folder = tmp_path / "imgs"
    for label in ("a", "b"):
        for i in range(3):
            (folder / label / "deep").mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((4, 4, 3), i * 40, np.uint8)).save(folder / label / "deep" / f"{label}{i}.png")
    rows = [{"file": f"a/deep/a{i}.png" if i < 2 else f"a{i}.png", "g": f"g{i}"} for i in range(3)]
    rows += [{"file": f"b{i}.png", "g": f"g{i}"} for i in range(3)]
    pd.DataFrame(rows).to_csv(tmp_path / "t.csv", index=False)
    dataset = load_dataset(DataConfig.model_validate({"source": "images", "path": str(folder), "image_size": [4, 4],
                                                      "table": str(tmp_path / "t.csv"), "groups": "g"}))
    assert dataset.files == [f"{label}/deep/{label}{i}.png" for label in "ab" for i in range(3)]
    assert dataset.class_names == ["a", "b"] and dataset.y.tolist() == [0, 0, 0, 1, 1, 1]
    assert dataset.groups.tolist() == ["g0", "g1", "g2"] * 2


def test_the_table_is_found_beside_the_config(tmp_path):
    folder, table = setup(tmp_path)
    table.to_csv(tmp_path / "train.csv", index=False)
    data = {"source": "images", "path": "imgs", "image_size": [4, 4], "table": "train.csv", "file_column": "img",
            "target": "label"}
    config = load_config({"name": "t", "data": data, "strategies": {"a": {"schedule": "constant", "lr": 0.1}}},
                         base_dir=tmp_path)
    assert load_dataset(config.data, base_dir=tmp_path).n_samples == 12


def write(table, tmp_path):
    table.to_csv(tmp_path / "t.csv", index=False)
    return tmp_path / "t.csv"


def missing_file(folder, table):
    return pd.concat([table, pd.DataFrame([{"img": "nope.png", "label": "cat", "subject": "s0"}])])


def unlisted(folder, table):
    return table.iloc[1:]


def duplicate(folder, table):
    return pd.concat([table, table.iloc[[2]]])


def ambiguous(folder, table):
    for sub in ("a", "b"):
        (folder / sub).mkdir()
        Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(folder / sub / "img_03.png")
    (folder / "img_03.png").unlink()
    return table


def empty_group(folder, table):
    table = table.copy()
    table.loc[4, "subject"] = ""
    return table


def empty_label(folder, table):
    table = table.copy()
    table.loc[5, "label"] = " "
    return table


@pytest.mark.parametrize("damage, changes, expected", [
    (missing_file, {}, r"^data.table: t.csv line 14 names image 'nope.png', which is not under data.path"),
    (unlisted, {}, r"^data.table: image 'img_00.png' under data.path is in no row of t.csv"),
    (duplicate, {}, r"^data.table: t.csv lines 4 and 14 both name image 'img_02.png'; keep one row per image"),
    (ambiguous, {}, r"^data.file_column: t.csv line 5 names 'img_03.png', which is ambiguous under data.path "
                    r"\('a/img_03.png', 'b/img_03.png'\); write the path relative to data.path"),
    (empty_group, {"groups": "subject"}, r"^data.groups: t.csv line 6 \(image 'img_04.png'\) has an empty 'subject'"),
    (empty_label, {}, r"^data.target: t.csv line 7 \(image 'img_05.png'\) has an empty 'label'"),
    (None, {"file_column": "name"},
     r"^data.file_column: column 'name' is not in t.csv \(columns: img, label, subject\)"),
    (None, {"target": "class"}, r"^data.target: column 'class' is not in t.csv"),
    (None, {"groups": "driver"}, r"^data.groups: column 'driver' is not in t.csv"),
    (None, {"target": None, "groups": "subject"}, r"^data.target: image 'img_00.png' is in no class folder"),
], ids=["missing file", "image in no row", "duplicate rows", "ambiguous name", "empty group", "empty label",
        "no file column", "no target column", "no groups column", "flat folder without target"])
def test_table_errors_name_the_file_or_row(tmp_path, damage, changes, expected):
    folder, table = setup(tmp_path)
    if damage is not None:
        table = damage(folder, table)
    with pytest.raises(DataError, match=expected) as error:
        load_dataset(images_cfg(folder, write(table, tmp_path), **changes))
    assert "\n" not in str(error.value)


def test_a_missing_or_empty_table_is_named(tmp_path):
    folder, _ = setup(tmp_path)
    with pytest.raises(DataError, match=r"^data.table: '.*none.csv' is not a file"):
        load_dataset(images_cfg(folder, tmp_path / "none.csv"))
    (tmp_path / "empty.csv").write_text("img,label\n")
    with pytest.raises(DataError, match=r"^data.table: .* has a header but no rows"):
        load_dataset(images_cfg(folder, tmp_path / "empty.csv"))


def experiment(data):
    return {"name": "t", "data": {"source": "images", "path": "imgs", "image_size": [4, 4], **data},
            "strategies": {"a": {"schedule": "constant", "lr": 0.1}}}


@pytest.mark.parametrize("data, expected", [
    ({"augment": {"flip": "horizontal", "shear": 0.1}}, r"^data.augment.shear"),
    ({"augment": {"rotation": -0.1}}, r"^data.augment.rotation: -0.1 must be >= 0"),
    ({"augment": {"zoom": 1.5}}, r"^data.augment.zoom: 1.5 must be < 1"),
    ({"augment": {"flip": "diagonal"}}, r"^data.augment.flip: 'diagonal' is not one of horizontal, vertical"),
    ({"table": "t.csv"}, r"^data.table: 't.csv' must be used with data.target \(labels\) and/or data.groups"),
    ({"target": "label"}, r"^data.target: 'label' must be omitted unless data.table names a CSV"),
    ({"groups": "subject"}, r"^data.groups: 'subject' must be omitted unless data.table"),
    ({"file_column": "img"}, r"^data.file_column: 'img' must be omitted unless data.table"),
    ({"table": "", "target": "y"}, r"^data.table: '' must be a non-empty path"),
])
def test_bad_image_keys_are_one_line_config_errors(data, expected):
    with pytest.raises(ConfigError, match=expected) as error:
        load_config(experiment(data))
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("key, value", [("table", "t.csv"), ("cache", "c"), ("augment", {"flip": "vertical"}),
                                        ("file_column", "f")])
def test_image_keys_are_refused_for_other_sources(key, value):
    data = {"source": "sklearn", "name": "iris", key: value}
    with pytest.raises(ConfigError, match=rf"^data.{key}: .* must be omitted unless source is 'images'"):
        load_config({"name": "t", "data": data, "strategies": {"a": {"schedule": "constant", "lr": 0.1}}})


def test_file_column_defaults_to_file_and_the_schema_lists_the_new_keys():
    config = load_config(experiment({"table": "t.csv", "target": "label"}))
    assert config.data.file_column == "file" and config.data.augment is None
    from kfold_clr.config import ExperimentConfig

    schema = ExperimentConfig.model_json_schema()
    data = schema["$defs"]["DataConfig"]["properties"]
    assert {"table", "file_column", "cache", "augment"} <= set(data)
    assert set(schema["$defs"]["AugmentConfig"]["properties"]) == {"flip", "rotation", "zoom", "translation",
                                                                   "contrast"}


@pytest.mark.parametrize("splitter", ["auto", "group", "stratified_group"])
def test_group_splitters_keep_each_subject_in_one_validation_fold(tmp_path, splitter):
    from kfold_clr.data.splits import make_splits

    folder, table = setup(tmp_path, n=24)
    dataset = load_dataset(images_cfg(folder, write(table, tmp_path), groups="subject"))
    splits = make_splits(dataset, splitter=splitter, n_splits=4, n_repeats=1, shuffle=True, seed=0)
    seen = np.zeros(dataset.n_samples, int)
    for split in splits:
        seen[split.val] += 1
        assert not set(dataset.groups[split.train]) & set(dataset.groups[split.val])
    assert (seen == 1).all()
