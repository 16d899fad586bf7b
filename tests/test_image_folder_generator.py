"""The State-Farm-shaped folder generator of the benchmarks (issue 24): its shape, determinism,
and that it never writes into an existing non-empty folder."""

import importlib.util
import pathlib

import pandas as pd
import pytest
from PIL import Image

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def image_folder():
    spec = importlib.util.spec_from_file_location("image_folder", ROOT / "benchmarks" / "image_folder.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def folder_bytes(root):
    return {path.relative_to(root).as_posix(): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


def test_class_folders_and_a_driver_table_one_row_per_image(image_folder, tmp_path):
    made = image_folder.make_image_folder(tmp_path / "out", n=30, size=24, classes=3, drivers=4, seed=1)
    table = pd.read_csv(made["table"])
    assert list(table.columns) == ["subject", "classname", "img"] and len(table) == 30
    assert sorted(p.name for p in made["images"].iterdir()) == ["c0", "c1", "c2"]
    for row in table.itertuples():
        with Image.open(made["images"] / row.classname / row.img) as image:
            assert image.size == (24, 24) and image.format == "JPEG"
    assert table.img.is_unique and set(table.subject) == {"p000", "p001", "p002", "p003"}
    assert (table.groupby("subject").classname.nunique() == 3).all()  # every driver shows every class


def test_the_same_seed_gives_the_same_bytes_and_another_seed_other_images(image_folder, tmp_path):
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        image_folder.make_image_folder(tmp_path / name, n=20, size=16, classes=2, drivers=3, seed=seed)
    assert folder_bytes(tmp_path / "a") == folder_bytes(tmp_path / "b") != folder_bytes(tmp_path / "c")


def test_an_existing_non_empty_folder_is_never_touched(image_folder, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    with pytest.raises(FileExistsError):
        image_folder.make_image_folder(out, n=10, size=16, classes=2)
    assert image_folder.main([str(out), "--n", "10", "--size", "16", "--classes", "2"]) == 2
    assert "not an empty folder" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["mine.txt"] and (out / "mine.txt").read_text() == "keep"
