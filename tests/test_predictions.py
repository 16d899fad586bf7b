"""Issue 24, item 5: every out-of-fold prediction kept (`predictions.csv`), its confusion matrices and
the grid of the most confidently wrong images; synthetic fold records, no TensorFlow."""

import json
import os
import shutil

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from sklearn.metrics import confusion_matrix  # noqa: E402

from _results_fixture import make_config, make_folds, write_results_dir  # noqa: E402
from kfold_clr.analysis import predictions as oof  # noqa: E402
from kfold_clr.cli.main import main  # noqa: E402
from kfold_clr.config import load_config  # noqa: E402
from kfold_clr.errors import ResultsError  # noqa: E402
from kfold_clr.plots.predictions import plot_confusion_matrix, plot_image_grid  # noqa: E402
from kfold_clr.report import build_report  # noqa: E402
from kfold_clr.storage import layout  # noqa: E402
from kfold_clr.storage.store import ResultsStore  # noqa: E402

CLASSES = ["cat", "dog/wolf", "bird 1"]  # "/" and " " are not kept in column names
N_VAL = 40


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _payload(rng, fold, *, snapshot=False, files=False, n_classes=3):
    probs = rng.dirichlet(np.ones(n_classes), size=N_VAL).astype(np.float32)
    payload = {"rows": np.arange(N_VAL, dtype=np.int64) + N_VAL * fold,
               "y_true": rng.integers(0, n_classes, N_VAL), "output": probs, "class_names": CLASSES}
    if snapshot:
        payload["snapshot_output"] = rng.dirichlet(np.ones(n_classes), size=N_VAL).astype(np.float32)
    if files:
        payload["files"] = [f"c{i % n_classes}/img_{fold}_{i}.png" for i in range(N_VAL)]
    return payload


def _save_records(directory, folds, *, files=False, seed=0):
    """A record per folds.csv row, saved as the runner saves it; returns {(strategy, repeat, fold): payload}."""
    rng = np.random.default_rng(seed)
    store, saved = ResultsStore(directory), {}
    for row in folds.to_dict("records"):
        record = {"row": row}
        if row["status"] != "failed":
            record["predictions"] = _payload(rng, row["fold"], snapshot=row["strategy"] == "clr_reset", files=files)
            saved[row["strategy"], row["repeat"], row["fold"]] = record["predictions"]
        store.save_record(row["strategy"], f"r{row['repeat']}_f{row['fold']}", record)
    return saved


@pytest.fixture
def results(tmp_path):
    folds = make_folds(failed=(("clr_carry", 0, 1),))
    directory = write_results_dir(tmp_path / "results", folds=folds)
    return directory, folds, _save_records(directory, folds)


# ----------------------------------------------------------------------------- store and table
def test_payload_is_saved_beside_the_record_and_round_trips(results):
    directory, _, saved = results
    store = ResultsStore(directory)
    record = json.loads((directory / "folds/clr_reset/r1_f2.json").read_text())
    assert "predictions" not in record
    loaded = store.load_predictions("clr_reset", "r1_f2")
    expected = saved["clr_reset", 1, 2]
    for name in ("rows", "y_true", "output", "snapshot_output"):
        np.testing.assert_array_equal(loaded[name], expected[name])
    assert loaded["class_names"] == CLASSES


def test_predictions_csv_columns_and_values(results):
    directory, folds, saved = results
    build_report(directory)
    table = pd.read_csv(directory / "predictions.csv")
    probs = ["prob_cat", "prob_dog_wolf", "prob_bird_1"]
    assert list(table.columns) == ["strategy", "repeat", "fold", "row", "y_true", "y_pred", *probs,
                                   "snapshot_y_pred", *[f"snapshot_{name}" for name in probs]]
    assert list(pd.unique(table["strategy"])) == ["constant", "clr_reset", "clr_carry"]
    for (strategy, repeat, fold), payload in saved.items():
        rows = table[(table["strategy"] == strategy) & (table["repeat"] == repeat) & (table["fold"] == fold)]
        np.testing.assert_array_equal(rows["row"], payload["rows"])
        assert list(rows["y_true"]) == [CLASSES[i] for i in payload["y_true"]]
        assert list(rows["y_pred"]) == [CLASSES[i] for i in payload["output"].argmax(axis=1)]
        np.testing.assert_allclose(rows[probs].to_numpy(), payload["output"], rtol=1e-6)
        if strategy == "clr_reset":
            snapshot = payload["snapshot_output"]
            assert list(rows["snapshot_y_pred"]) == [CLASSES[i] for i in snapshot.argmax(axis=1)]
            np.testing.assert_allclose(rows[[f"snapshot_{p}" for p in probs]].to_numpy(), snapshot, rtol=1e-6)
        else:
            assert rows["snapshot_y_pred"].isna().all()
    assert len(table) == N_VAL * len(saved)


def test_a_failed_fold_has_no_rows_and_a_refit_that_failed_drops_the_old_payload(results):
    directory, _, _ = results
    build_report(directory)
    table = pd.read_csv(directory / "predictions.csv")
    carry = table[table["strategy"] == "clr_carry"]
    assert set(zip(carry["repeat"], carry["fold"])) == {(0, 0), (0, 2), (1, 0), (1, 1), (1, 2)}
    store = ResultsStore(directory)
    assert store.predictions_path("clr_carry", "r0_f1").exists() is False
    store.save_record("constant", "r0_f0", {"row": {"strategy": "constant", "repeat": 0, "fold": 0,
                                                    "status": "failed", "error": "boom"}})
    assert not store.predictions_path("constant", "r0_f0").exists()
    build_report(directory)
    rebuilt = pd.read_csv(directory / "predictions.csv")
    assert not ((rebuilt["strategy"] == "constant") & (rebuilt["repeat"] == 0) & (rebuilt["fold"] == 0)).any()


def test_old_results_without_payloads_have_no_predictions_csv(tmp_path):
    directory = write_results_dir(tmp_path / "results")
    build_report(directory)
    assert not (directory / "predictions.csv").exists()
    assert "## Predictions" not in (directory / "report.md").read_text()


def test_report_verb_rebuilds_predictions_csv_identically(results, capsys):
    directory, _, _ = results
    assert main(["report", str(directory)]) == 0
    first = (directory / "predictions.csv").read_bytes()
    (directory / "predictions.csv").unlink()
    assert main(["report", str(directory)]) == 0
    assert (directory / "predictions.csv").read_bytes() == first
    assert "`predictions.csv`" in (directory / "report.md").read_text()


def test_regression_payload_gives_the_prediction_and_the_snapshot_prediction(tmp_path):
    rows = [{"strategy": "s", "repeat": 0, "fold": fold} for fold in range(2)]
    rng = np.random.default_rng(1)
    payloads = [{"rows": np.arange(5) + 5 * fold, "y_true": rng.normal(size=5).astype(np.float32),
                 "output": rng.normal(size=(5, 1)).astype(np.float32),
                 "snapshot_output": rng.normal(size=(5, 1)).astype(np.float32)} for fold in range(2)]
    saved = oof.predictions_table(list(zip(rows, payloads)))
    assert not saved.is_classification
    assert list(saved.frame.columns) == ["strategy", "repeat", "fold", "row", "y_true", "y_pred", "snapshot_y_pred"]
    np.testing.assert_array_equal(saved.frame["y_pred"], np.concatenate([p["output"][:, 0] for p in payloads]))


def test_unnamed_classes_use_their_indices_and_nan_outputs_have_no_prediction():
    payload = {"rows": np.arange(3), "y_true": np.array([0, 1, 1]),
               "output": np.array([[0.9, 0.1], [np.nan, np.nan], [0.2, 0.8]], dtype=np.float32)}
    frame = oof.predictions_table([({"strategy": "s", "repeat": 0, "fold": 0}, payload)]).frame
    assert list(frame.columns[-2:]) == ["prob_0", "prob_1"]
    assert frame["y_pred"].isna().tolist() == [False, True, False]
    assert frame["y_pred"][[0, 2]].tolist() == ["0", "1"]


# ----------------------------------------------------------------------------- figures
def test_confusion_matrices_count_like_sklearn_over_ok_folds(results):
    directory, folds, saved = results
    build_report(directory)
    table = pd.read_csv(directory / "predictions.csv")
    for strategy in ("constant", "clr_reset"):
        ok = folds[(folds["strategy"] == strategy) & (folds["status"] == "ok")]
        payloads = [saved[strategy, r, f] for r, f in zip(ok["repeat"], ok["fold"])]
        truth = np.concatenate([p["y_true"] for p in payloads])
        predicted = np.concatenate([p["output"].argmax(axis=1) for p in payloads])
        expected = confusion_matrix(truth, predicted, labels=range(3))
        kept = table.merge(ok[["strategy", "repeat", "fold"]], on=["strategy", "repeat", "fold"])
        np.testing.assert_array_equal(oof.confusion(kept, CLASSES), expected)
        assert expected.sum() == N_VAL * len(ok)
    assert len(ok) == 6 and (folds["status"] == "diverged").sum() == 1  # constant r1_f2 diverged: left out
    ax = plot_confusion_matrix(expected, CLASSES)
    np.testing.assert_array_equal(ax.images[0].get_array(), expected)
    assert (directory / "plots/confusion_matrix_clr_reset.png").stat().st_size > 0


def test_confidently_wrong_picks_the_most_confident_mistakes():
    frame = pd.DataFrame({"y_true": ["a", "a", "b", "b", "a", "b"],
                          "y_pred": ["b", "a", "a", "a", "b", None],
                          "prob_a": [0.3, 0.99, 0.9, 0.6, 0.05, np.nan],
                          "prob_b": [0.7, 0.01, 0.1, 0.4, 0.95, np.nan]})
    picked = oof.confidently_wrong(frame, ["prob_a", "prob_b"], n=2)
    assert picked.index.tolist() == [4, 2]  # wrong at 0.95 and 0.9; the right row at 0.99 is not picked
    np.testing.assert_allclose(picked["confidence"], [0.95, 0.9])
    repeated = oof.confidently_wrong(frame.assign(row=[7, 1, 7, 3, 7, 5]), ["prob_a", "prob_b"], n=3)
    assert repeated.index.tolist() == [4, 3]  # row 7 once, at 0.95; then row 3 (0.6)


def _image_results(tmp_path, folds):
    from PIL import Image

    images = tmp_path / "imgs"
    for i in range(N_VAL):
        for fold in range(3):
            path = images / f"c{i % 3}" / f"img_{fold}_{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((12, 12, 3), 20 * (i % 10), dtype=np.uint8)).save(path)
    config = make_config()
    config["data"] = {"source": "images", "path": str(images), "image_size": [12, 12]}
    config = load_config(config).to_dict()
    directory = write_results_dir(tmp_path / "results", config=config, folds=folds)
    return directory, images, _save_records(directory, folds, files=True)


def test_image_sets_get_a_file_column_and_a_grid_of_confident_mistakes(tmp_path, monkeypatch):
    folds = make_folds()
    directory, images, saved = _image_results(tmp_path, folds)
    from kfold_clr.plots import predictions as plots

    drawn = []

    original = plots.plot_image_grid

    def spy(images_, captions, **options):
        drawn.append(captions)
        return original(images_, captions, **options)

    monkeypatch.setattr(plots, "plot_image_grid", spy)
    build_report(directory)
    table = pd.read_csv(directory / "predictions.csv")
    assert table.columns[4] == "file"
    payload = saved["constant", 0, 0]
    first = table[(table["strategy"] == "constant") & (table["repeat"] == 0) & (table["fold"] == 0)]
    assert first["file"].tolist() == payload["files"]
    assert (directory / "plots/confident_errors_constant.png").is_file()
    ok = folds[(folds["strategy"] == "constant") & (folds["status"] == "ok")]
    rows = table.merge(ok[["strategy", "repeat", "fold"]]).query("strategy == 'constant'")
    wrong = rows[rows["y_true"] != rows["y_pred"]]
    top = wrong.assign(c=wrong[["prob_cat", "prob_dog_wolf", "prob_bird_1"]].max(axis=1))
    top = top.sort_values("c", ascending=False, kind="stable").drop_duplicates("row").head(len(drawn[0]))
    assert len(drawn[0]) == 12 and top["row"].is_unique  # a row wrong in both repeats is shown once
    assert [caption.splitlines()[1] for caption in drawn[0]] == [os.path.basename(f) for f in top["file"]]
    assert "Most confidently wrong images (constant)" in (directory / "report.md").read_text()

    shutil.rmtree(images)  # the data folder is gone: no grid, a note, the rest of the report intact
    for path in (directory / "plots").glob("confident_errors_*.png"):
        path.unlink()
    build_report(directory)
    text = (directory / "report.md").read_text()
    assert "not shown: the image folder" in text and "Confusion matrix (constant)" in text
    assert not list((directory / "plots").glob("confident_errors_*.png"))


def test_image_grid_draws_each_image_with_its_caption_and_marks_unreadable_ones():
    figure = plot_image_grid(iter([np.zeros((4, 4, 3), np.uint8), None]), ["a", "b"], ncols=2)
    titles = [ax.get_title() for ax in figure.axes]
    assert titles == ["a", "b"] and len(figure.axes[0].images) == 1 and not figure.axes[1].images


def test_image_grid_captions_sit_above_their_images_inside_the_figure():
    captions = [f"true class_{i}, predicted class_{i + 1} (97%)\nimg_{i:05d}.jpg" for i in range(9)]
    captions.append("true golden_retriever_puppy, predicted labrador_retriever_adult (97%)\n"
                    + "a" * 70 + "_END.jpg\na third line")
    figure = plot_image_grid(iter([np.zeros((160, 120, 3), np.uint8)] * 10), captions)
    long = figure.axes[9].get_title().splitlines()
    assert len(long) == 2 and long[0].startswith("true golden") and long[1].endswith("_END.jpg")
    assert max(map(len, long)) <= 44 and "\u2026" in long[1]
    renderer = figure.canvas.get_renderer()
    page = figure.bbox
    boxes = []
    for ax in figure.axes[:10]:
        title = ax.title.get_window_extent(renderer)
        image = ax.get_window_extent(renderer)
        assert title.y0 >= image.y1 - 1 and page.x0 <= title.x0 and title.x1 <= page.x1 and title.y1 <= page.y1
        boxes.append(title)
    above = [ax.get_window_extent(renderer) for ax in figure.axes[:6]]
    assert all(box.y1 <= upper.y0 + 1 for box, upper in zip(boxes[4:], above))  # below the row above
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])


# ----------------------------------------------------------------------------- safety
def test_link_at_the_predictions_file_is_refused_and_not_followed(results, tmp_path):
    directory, _, _ = results
    outside = tmp_path / "outside.npz"
    outside.write_text("precious\n")
    target = ResultsStore(directory).predictions_path("constant", "r0_f0")
    target.unlink()
    target.symlink_to(outside)
    rng = np.random.default_rng(5)
    record = {"row": {"strategy": "constant", "repeat": 0, "fold": 0, "status": "ok"},
              "predictions": _payload(rng, 0)}
    with pytest.raises(ResultsError, match="link"):
        ResultsStore(directory).save_record("constant", "r0_f0", record)
    with pytest.raises(ResultsError, match="link"):  # a record without predictions does not delete it either
        ResultsStore(directory).save_record("constant", "r0_f0", {"row": record["row"]})
    assert outside.read_text() == "precious\n" and target.is_symlink()


def test_fresh_deletes_payloads_and_checkpoints_but_keeps_user_files(results):
    directory, _, _ = results
    build_report(directory)
    checkpoint = directory / "checkpoints" / "0123456789abcdef.ckpt.npz"
    checkpoint.parent.mkdir()
    checkpoint.write_bytes(b"x")
    assert len(list(directory.glob("folds/*/r*_f*.predictions.npz"))) == 17  # 18 folds, one failed
    mine = [directory / "checkpoints" / "mine.ckpt.npz", directory / "folds" / "constant" / "notes.predictions.npz",
            directory / "folds" / "constant" / "r0_f0.predictions.npz.bak"]
    for path in mine:
        path.write_text("mine\n")
    assert layout.written_by_a_run("folds/constant/r0_f0.predictions.npz")
    assert layout.written_by_a_run("predictions.csv")
    store = ResultsStore(directory).open()
    try:
        left = store.discard()
    finally:
        store.close()
    assert not list(directory.glob("folds/*/r*_f*.predictions.npz")) and not checkpoint.exists()
    assert not (directory / "predictions.csv").exists()
    assert all(path.read_text() == "mine\n" for path in mine)
    assert sorted(left) == sorted(str(path.relative_to(directory)) for path in mine)


def test_class_names_that_clash_once_made_safe_get_their_index():
    assert oof.prob_columns(["a b", "a/b", "", "c"]) == ["prob_a_b", "prob_a_b_1", "prob_2", "prob_c"]


def test_a_damaged_payload_gives_no_rows_and_the_report_still_builds(results):
    directory, _, _ = results
    ResultsStore(directory).predictions_path("constant", "r0_f1").write_bytes(b"PK\x03\x04 not a zip")
    build_report(directory)
    table = pd.read_csv(directory / "predictions.csv")
    keys = set(zip(table["strategy"], table["repeat"], table["fold"]))
    assert ("constant", 0, 1) not in keys and ("constant", 0, 0) in keys


def test_a_relative_image_folder_is_looked_up_beside_the_runs_config(tmp_path, monkeypatch):
    from kfold_clr.report.predictions import image_folder

    (tmp_path / "project" / "imgs").mkdir(parents=True)
    raw = make_config()
    raw["data"] = {"source": "images", "path": "imgs", "image_size": [12, 12]}
    config = load_config(raw)
    monkeypatch.chdir(tmp_path)
    assert image_folder(config, {}) is None  # not in the working directory, and no record of the config's
    meta = {"runs": [{"base_dir": str(tmp_path / "project")}]}
    assert image_folder(config, meta) == tmp_path / "project" / "imgs"
