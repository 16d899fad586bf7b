
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from _results_fixture import (  # noqa: E402
    N_REPEATS,
    N_SPLITS,
    STRATEGIES,
    make_config,
    make_folds,
    make_history,
    make_lr,
    make_range_tests,
    write_results_dir,
)
from kfold_clr.analysis.tables import comparison_table  # noqa: E402
from kfold_clr.analysis.verdicts import verdict_line  # noqa: E402
from kfold_clr.cli.main import main  # noqa: E402
from kfold_clr.config import load_config  # noqa: E402
from kfold_clr.errors import ConfigError, ResultsError  # noqa: E402
from kfold_clr.plots import experiment as figures  # noqa: E402
from kfold_clr.report import build_report, markdown_table  # noqa: E402

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ORDER = list(STRATEGIES)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """One complete results directory with a diverged and a failed fold, reported once."""
    directory = tmp_path_factory.mktemp("results") / "tiny"
    folds = make_folds(failed=(("clr_carry", 0, 1),))
    write_results_dir(directory, folds=folds)
    return directory, build_report(directory)


# ---------------------------------------------------------------- plots


def test_lr_trace_has_one_panel_per_strategy_and_marks_fold_boundaries():
    lr = make_lr(make_folds())
    figure = figures.plot_lr_trace(lr, strategies=ORDER)
    visible = [ax for ax in figure.axes if ax.get_visible()]
    assert [ax.get_title(loc="left") for ax in visible] == ORDER
    for ax in visible:
        boundaries = [line for line in ax.lines if len(set(line.get_xdata())) == 1]
        assert len(boundaries) == N_REPEATS * N_SPLITS - 1
    # folds are laid out one after another: the last x is the total number of iterations - 1
    traces = [line for line in visible[1].lines if len(set(line.get_xdata())) > 1]
    assert max(traces[-1].get_xdata()) == lr[lr.strategy == "clr_reset"].groupby(["repeat", "fold"]).size().sum() - 1


def test_learning_curves_draw_mean_and_band_per_strategy():
    history = make_history(make_folds())
    figure = figures.plot_learning_curves(history, "accuracy", strategies=ORDER)
    train_ax, val_ax = figure.axes[:2]
    assert len(val_ax.lines) == len(ORDER) and len(val_ax.collections) == len(ORDER)
    means = history[history.strategy == "clr_reset"].groupby("epoch")["val_accuracy"].mean()
    np.testing.assert_allclose(val_ax.lines[1].get_ydata(), means.to_numpy())
    assert "validation" in val_ax.get_title() and "training" in train_ax.get_title()
    with pytest.raises(ValueError, match="Argument `band` must be one of"):
        figures.plot_learning_curves(history, "accuracy", band="iqr")


def test_fold_scores_join_points_of_the_same_split():
    folds = make_folds()
    ax = figures.plot_fold_scores(folds, "accuracy", strategies=ORDER)
    assert len(ax.lines) == N_REPEATS * N_SPLITS
    labels = [label.get_text() for label in ax.get_xticklabels()]
    assert labels[0] == "constant\n(1 diverged)"
    ax2 = plt.figure().add_subplot()
    assert figures.plot_fold_scores(folds, "accuracy", ax=ax2) is ax2


def test_range_test_scope_plot_draws_the_curve_on_a_log_axis():
    range_tests = make_range_tests()
    ax = figures.plot_range_test_scope(range_tests)
    assert ax.get_xscale() == "log" and ax.lines
    assert "shared" in ax.get_title()
    # the bounds used are shaded and named in the legend
    low, high = float(range_tests["base_lr"].iloc[0]), float(range_tests["max_lr"].iloc[0])
    legend = ax.get_legend()
    assert legend is not None
    assert f"bounds used: {low:.2g} to {high:.2g}" in [text.get_text() for text in legend.get_texts()]
    spans = []
    for patch in ax.patches:
        xy = patch.get_patch_transform().transform(patch.get_path().vertices)  # x in data units
        spans.append((xy[:, 0].min(), xy[:, 0].max(), xy[:, 1].min(), xy[:, 1].max()))
    assert any(x0 == pytest.approx(low) and x1 == pytest.approx(high) and y0 <= 0.0 and y1 >= 1.0
               for x0, x1, y0, y1 in spans), spans


# ---------------------------------------------------------------- report


def test_report_writes_every_file(built):
    directory, report = built
    assert report == directory / "report.md"
    for name in ("summary.csv", "comparison.csv", "report.md"):
        assert (directory / name).stat().st_size > 100
    expected = ["lr_trace.png", "learning_curves_accuracy.png", "learning_curves_loss.png",
                "fold_scores_accuracy.png", "fold_scores_loss.png", "range_test_shared.png"]
    for name in expected:
        data = (directory / "plots" / name).read_bytes()
        assert data.startswith(PNG_SIGNATURE) and len(data) > 5000, name
    leftovers = [p.name for p in directory.rglob(".*")]
    assert leftovers == [".kfold_clr"]  # the ownership marker; no temporary files


def test_report_tables_match_the_analysis(built):
    directory, _ = built
    folds = pd.read_csv(directory / "folds.csv")
    expected = comparison_table(folds, ["accuracy", "loss"], strategies=ORDER, rope=0.01)
    written = pd.read_csv(directory / "comparison.csv")
    assert list(zip(written.a, written.b, written.metric)) == list(zip(expected.a, expected.b, expected.metric))
    np.testing.assert_allclose(written["p_holm"], expected["p_holm"])
    summary = pd.read_csv(directory / "summary.csv")
    failed = summary[(summary.strategy == "clr_carry") & (summary.metric == "accuracy")].iloc[0]
    assert failed["n"] == 5 and failed["n_failed"] == 1


def test_report_markdown_contents(built):
    directory, report = built
    text = report.read_text()
    assert text.startswith("# tiny:")
    for heading in ("## Settings", "## Strategies", "## Flags", "## Verdicts", "## Summary", "## Comparisons"):
        assert heading in text
    assert "| strategy | metric | mean |" in text
    assert "| A | B | metric | n |" in text
    assert "3 folds x 2 repeat(s) = 6 splits" in text
    # verdict lines for the primary metric, exactly as verdicts.verdict_line writes them
    comparison = pd.read_csv(directory / "comparison.csv", keep_default_na=True)
    first = comparison[comparison.metric == "accuracy"].iloc[0].to_dict()
    first["note"] = "" if not isinstance(first["note"], str) else first["note"]
    assert f"- {verdict_line(first)}" in text
    # leaky rows, diverged and failed folds are called out
    assert "**clr_carry** (leaky, 4 of 6 folds): validation fold trained on before: carried weights" in text
    assert "1 of 6 folds diverged" in text and "ValueError: boom" in text
    # image links are relative and point at files
    for link in ("plots/lr_trace.png", "plots/fold_scores_accuracy.png", "plots/range_test_shared.png"):
        assert f"]({link})" in text and (directory / link).is_file()


def test_report_uses_reference_and_rope_arguments(tmp_path):
    directory = write_results_dir(tmp_path / "r", range_tests=False)
    build_report(directory, reference="constant", rope=0.02)
    comparison = pd.read_csv(directory / "comparison.csv")
    plain = comparison[~comparison.a.str.endswith("[snapshots]")]
    assert set(plain.b) == {"constant"}
    by_metric = comparison.groupby("metric")["rope"]  # a number is the primary metric's rope
    assert (by_metric.get_group("accuracy") == 0.02).all() and by_metric.get_group("loss").isna().all()
    build_report(directory, rope={"accuracy": 0.03, "loss": 0.1})
    comparison = pd.read_csv(directory / "comparison.csv")
    assert comparison.set_index("metric")["rope"].to_dict() == {"accuracy": 0.03, "loss": 0.1}
    assert not (directory / "plots" / "range_test_shared.png").exists()
    with pytest.raises(ConfigError, match="Argument `reference` must be one of"):
        build_report(directory, reference="nope")
    with pytest.raises(ConfigError, match="rope"):
        build_report(directory, rope=-1)


def test_report_primary_metric_defaults_to_loss(tmp_path):
    config = make_config()
    config["training"]["metrics"] = None
    directory = write_results_dir(tmp_path / "r", config=config, range_tests=False)
    for name in ("history.csv", "lr.csv", "meta.json"):
        (directory / name).unlink()
    text = build_report(directory).read_text()
    assert "Primary metric: **loss**" in text
    assert (directory / "plots" / "fold_scores_loss.png").is_file()
    assert set(pd.read_csv(directory / "comparison.csv").metric) == {"loss"}


def test_report_with_a_single_strategy_has_nothing_to_compare(tmp_path):
    folds = make_folds()
    folds = folds[folds.strategy == "constant"]
    directory = write_results_dir(tmp_path / "r", folds=folds)
    text = build_report(directory).read_text()
    assert "nothing to compare" in text


def _settings_row(text, setting):
    return next(line for line in text.splitlines() if line.startswith(f"| {setting} |"))


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ({"kind": "mlp", "hidden": [8]},
         "| model | kind=mlp, hidden=[8], activation=relu, dropout=0.0, batch_norm=False |"),
        ({"kind": "cnn", "hidden": [8], "filters": [4], "kernel_size": 5},
         "| model | kind=cnn, hidden=[8], activation=relu, dropout=0.0, batch_norm=False, filters=[4], "
         "kernel_size=5 |"),
        ({"factory": "my_models:build", "params": {"width": 16}},
         "| model | factory=my_models:build, params={'width': 16} |"),
        ({"factory": "my_models:build"}, "| model | factory=my_models:build |"),
    ],
)
def test_report_settings_show_only_the_model_settings_that_apply(tmp_path, model, expected):
    config = make_config()
    config["model"] = load_config({**config, "model": model}).to_dict()["model"]
    directory = write_results_dir(tmp_path / "r", config=config, range_tests=False)
    assert _settings_row(build_report(directory).read_text(), "model") == expected


def test_report_fills_unsaved_settings_with_the_schema_defaults(tmp_path):
    """A config.yaml with only the required keys reads as the loader resolves it: splitter auto, and no
    rope for a primary metric in its own units (loss)."""
    minimal = {"name": "tiny", "data": {"source": "synthetic", "name": "classification"},
               "strategies": make_config()["strategies"]}
    directory = write_results_dir(tmp_path / "r", config=minimal, range_tests=False)
    text = build_report(directory).read_text()
    assert _settings_row(text, "cross-validation").startswith("| cross-validation | auto, 5 folds x 1 repeat(s)")
    assert "rope none for loss (no equivalence band);" in _settings_row(text, "comparison")
    assert pd.read_csv(directory / "comparison.csv").rope.isna().all()


def test_report_says_which_training_path_made_the_rows(tmp_path):
    directory = write_results_dir(tmp_path / "r", range_tests=False)
    folds = pd.read_csv(directory / "folds.csv")
    assert "sequential, fold by fold (execution.fused_folds: auto)" in _settings_row(
        build_report(directory).read_text(), "training path")
    folds.assign(fused=True).to_csv(directory / "folds.csv", index=False)
    assert f"fused: all {len(folds)} folds as one stacked model" in _settings_row(
        build_report(directory).read_text(), "training path")


def test_markdown_table_escapes_and_formats():
    text = markdown_table(["a", "b"], [["x|y", float("nan")], [True, 0.123456]])
    assert text.splitlines() == ["| a | b |", "| --- | --- |", "| x\\|y | n/a |", "| yes | 0.1235 |"]


# ---------------------------------------------------------------- errors


def _corrupt(directory, name, content):
    path = directory / name
    if content is None:
        path.unlink()
    else:
        path.write_bytes(content)


@pytest.mark.parametrize(
    ("name", "content", "fragment"),
    [
        ("config.yaml", None, "not found"),
        ("folds.csv", None, "not found"),
        ("config.yaml", b"name: [unclosed\n  cv: {", "cannot be read as YAML"),
        ("config.yaml", b"- just\n- a list\n", "the top level must be a mapping"),
        ("folds.csv", b"strategy,repeat,fold,n_train\nx,0,0,5\n", "missing required column(s) ['n_val']"),
        ("folds.csv", b'strategy,repeat\n"x,0\n', "cannot be parsed as CSV"),
        ("folds.csv", b"", "cannot be parsed as CSV"),
        ("folds.csv", b"strategy,repeat,fold,n_train,n_val,val_loss\nx,0,zero,5,1,0.3\n", "'fold' must be numeric"),
        ("folds.csv", b"strategy,repeat,fold,n_train,n_val,val_loss\n", "has no rows"),
        ("folds.csv", b"strategy,repeat,fold,n_train,n_val\nx,0,0,5,1\n", "no validation score column"),
        ("history.csv", b"strategy,repeat\nx,0\n", "missing required column(s)"),
        ("lr.csv", b"\xff\xfe\x00garbage\x00\xff", "lr.csv"),
        ("meta.json", b"{not json", "cannot be parsed as JSON"),
    ],
)
def test_damaged_results_raise_results_error_naming_the_file(tmp_path, name, content, fragment):
    directory = write_results_dir(tmp_path / "r")
    _corrupt(directory, name, content)
    with pytest.raises(ResultsError) as info:
        build_report(directory)
    message = str(info.value)
    assert name in message and fragment in message
    assert "\n" not in message


def test_a_config_the_loader_refuses_is_one_line_naming_the_file(tmp_path, capsys):
    config = make_config()
    config["strategies"]["clr_reset"]["snapshots"] = True  # hand-edited, or from an older version
    with pytest.raises(ConfigError) as refused:
        load_config(config)
    directory = write_results_dir(tmp_path / "r", config=config)
    with pytest.raises(ResultsError) as info:
        build_report(directory)
    message = str(info.value)
    assert message.startswith(f"{directory / 'config.yaml'}: ") and str(refused.value) in message
    assert "\n" not in message
    assert main(["report", str(directory)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"kfold-clr: error: {message}"
    assert not (directory / "report.md").exists()


def test_missing_directory_raises_results_error(tmp_path):
    with pytest.raises(ResultsError, match="results directory not found"):
        build_report(tmp_path / "nowhere")


def test_cli_report_verb(built, tmp_path, capsys):
    directory, _ = built
    assert main(["report", str(directory)]) == 0
    assert "report.md" in capsys.readouterr().out
    assert main(["report", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("kfold-clr: error:") and len(err.splitlines()) == 1

