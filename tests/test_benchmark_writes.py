"""The benchmark scripts write only into folders they made, never through a link, and delete only
the temporary folder they created."""

import importlib.util
import pathlib
import sys

import pytest

from kfold_clr.errors import ResultsError

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _module(name):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    return module


@pytest.fixture
def victim(tmp_path):
    path = tmp_path / "victim.txt"
    path.write_text("user data")
    return path


def test_the_image_folder_refuses_a_link_at_its_table(tmp_path, victim, monkeypatch):
    image_folder = _module("image_folder")
    out = tmp_path / "out"
    original = image_folder.draw_image

    def draw_and_plant(*args, **kwargs):  # a link appears at the table's path while images are written
        table = out / image_folder.TABLE
        if not table.is_symlink():
            table.symlink_to(victim)
        return original(*args, **kwargs)

    monkeypatch.setattr(image_folder, "draw_image", draw_and_plant)
    with pytest.raises(ResultsError, match="symbolic link"):
        image_folder.make_image_folder(out, n=6, size=8, classes=2, drivers=2)
    assert victim.read_text() == "user data"


def test_the_image_folder_refuses_a_linked_output_folder(tmp_path):
    image_folder = _module("image_folder")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "out").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(FileExistsError):
        image_folder.make_image_folder(tmp_path / "out", n=6, size=8, classes=2, drivers=2)
    assert not any((tmp_path / "elsewhere").iterdir())


def test_the_checkpoint_benchmark_refuses_a_link_at_its_config(tmp_path, victim):
    bench = _module("bench_checkpoints")
    (tmp_path / "off.yaml").symlink_to(victim)
    with pytest.raises(ResultsError, match="symbolic link"):
        bench._write(tmp_path, "off", 0, 1)
    assert victim.read_text() == "user data"


def test_the_image_benchmark_deletes_only_the_folder_it_made(tmp_path, victim):
    bench = _module("bench_images")
    with bench.work_folder() as work:  # a temporary folder of its own: removed afterwards
        (work / "made.txt").write_text("x")
    assert not work.exists()
    kept = tmp_path / "kept"
    with bench.work_folder(kept) as work:
        (work / "made.txt").write_text("x")
    assert (kept / "made.txt").exists()  # --keep: left in place
    for refused in (tmp_path, tmp_path / "link"):  # not empty; a link to a folder
        if refused.name == "link":
            refused.symlink_to(kept)
        with pytest.raises(FileExistsError):
            with bench.work_folder(refused):
                pass
    assert victim.read_text() == "user data" and (kept / "made.txt").exists()


def test_the_full_size_benchmark_refuses_a_link_at_its_configs(tmp_path, victim):
    bench = _module("bench_full_size")
    (tmp_path / "cnn.yaml").symlink_to(victim)
    with pytest.raises(ResultsError, match="symbolic link"):
        bench.config(tmp_path, tmp_path / "drivers", "cnn", size=8, epochs=1)
    assert victim.read_text() == "user data"
    bench.config(tmp_path, tmp_path / "drivers", "backbone", size=8, epochs=1)  # a plain path is written
    assert (tmp_path / "backbone.yaml").is_file() and not (tmp_path / "backbone.yaml").is_symlink()


@pytest.mark.parametrize("train_scores", [True, False])  # both kfold_clr runs of the benchmark
def test_the_image_benchmark_refuses_a_link_at_its_config(tmp_path, victim, monkeypatch, train_scores):
    bench = _module("bench_images")
    work = tmp_path / "work"
    original = bench.kfold_clr_config

    def config_and_plant(*args, **kwargs):  # a link appears at the config's path after the folder is made
        (work / "experiment.yaml").symlink_to(victim)
        return original(*args, **kwargs)

    monkeypatch.setattr(bench, "kfold_clr_config", config_and_plant)
    monkeypatch.setattr(bench, "measured", lambda *a, **k: pytest.fail("nothing runs after a refused write"))
    args = type("Args", (), {"size": 8, "epochs": 1, "batch_size": 4, "folds": 2, "precision": "float32"})()
    with pytest.raises(ResultsError, match="symbolic link"):
        bench.run_kfold_clr(tmp_path / "folder", args=args, work=work, train_scores=train_scores)
    assert victim.read_text() == "user data"


def test_the_image_benchmark_keeps_the_median_time_and_the_largest_memory_of_repeated_runs():
    bench = _module("bench_images")
    runs = [{"seconds": s, "rss_anon_mib": m, "max_rss_mib": r, "decode_per_s": d, "accuracy": {"clr": 0.5}}
            for s, m, r, d in [(30.0, 900, None, 100.0), (10.0, 1100, 1500, 90.0), (20.0, 1000, 1400, 80.0)]]
    result = bench.combined(runs)
    assert result["seconds"] == 20.0 and result["rss_anon_mib"] == 1100 and result["max_rss_mib"] == 1500
    assert result["decode_per_s"] == 100.0 and result["accuracy"] == {"clr": 0.5}  # the first (cold-cache) run's
    assert bench.combined(runs[:1])["seconds"] == 30.0 and bench.combined(runs[:1])["max_rss_mib"] is None
    with pytest.raises(SystemExit):
        bench.main(["--repeats", "0"])
