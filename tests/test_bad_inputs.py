"""A corpus of bad inputs: each gets one line naming the key or file, exit code 2,
no traceback and no results directory."""

import copy

import numpy as np
import pytest
import yaml

from helpers import TINY_EXPERIMENT
from kfold_clr.cli.main import main

GOOD_CSV = "a,b,label\n" + "\n".join(f"{i},{i % 7},{i % 2}" for i in range(30)) + "\n"


def experiment(**changes):
    data = copy.deepcopy(TINY_EXPERIMENT)
    for dotted, value in changes.items():
        node, parts = data, dotted.split("__")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        if value is None and parts[-1] in node:
            del node[parts[-1]]
        else:
            node[parts[-1]] = value
    return yaml.safe_dump(data, sort_keys=False)


def csv_experiment(csv_text, **data_changes):
    data = {"source": "csv", "path": "data.csv", "target": "label", **data_changes}
    return experiment(data=data, cv={"splitter": "kfold", "n_splits": 3}), {"data.csv": csv_text}


CORPUS = {
    # YAML itself
    "yaml syntax error": ("name: [unclosed\n", {}, "invalid YAML at line"),
    "bad indentation": ("name: x\n  seed: 1\n", {}, "invalid YAML at line"),
    "empty file": ("", {}, "the file is empty"),
    "list at top level": ("- a\n- b\n", {}, "the top level must be a mapping"),
    "python object tag": ("name: !!python/object/apply:os.system ['touch pwned']\n", {}, "invalid YAML"),
    "python name tag": ("seed: !!python/name:os.system\n", {}, "invalid YAML"),
    # keys and types
    "unknown top-level key": (experiment(trainig={"epochs": 2}), {}, "trainig: unknown key"),
    "unknown nested key": (experiment(training__epoch=2), {}, "training.epoch: unknown key"),
    "unknown strategy key": (experiment(strategies__constant__learning_rate=0.1), {},
                             "strategies.constant.learning_rate: unknown key"),
    "epochs as text": (experiment(training__epochs="ten"), {}, "training.epochs: 'ten' must be a valid integer"),
    "epochs zero": (experiment(training__epochs=0), {}, "training.epochs: 0 must be >= 1"),
    "batch size negative": (experiment(training__batch_size=-4), {}, "training.batch_size: -4 must be >= 1"),
    "data not a mapping": (experiment(data="digits"), {}, "data: 'digits' must be a mapping"),
    "strategies empty": (experiment(strategies={}), {}, "strategies: {} must have at least 1 entry"),
    "strategy not a mapping": (experiment(strategies={"x": 3}), {}, "strategies.x:"),
    "n_splits one": (experiment(cv__n_splits=1), {}, "cv.n_splits: 1 must be >= 2"),
    "dropout one": (experiment(model__dropout=1.0), {}, "model.dropout: 1.0 must be < 1"),
    "momentum above one": (experiment(training__optimizer={"name": "sgd", "momentum": 1.5}), {},
                           "training.optimizer.momentum: 1.5 must be < 1"),
    "unknown optimizer": (experiment(training__optimizer={"name": "lbfgs"}), {},
                          "training.optimizer.name: 'lbfgs' is not one of sgd, adam, rmsprop"),
    # schedules and bounds
    "unknown schedule": (experiment(strategies={"x": {"schedule": "cyclic", "lr": 0.1}}), {},
                         "strategies.x: 'cyclic' is not a known schedule"),
    "unknown policy": (experiment(strategies__clr_reset__policy="triangle"), {},
                       "strategies.clr_reset.policy: 'triangle' is not one of triangular, triangular2, exp_range"),
    "inverted clr bounds": (experiment(strategies__clr_reset__base_lr=0.5), {},
                            "strategies.clr_reset.max_lr: 0.1 must be greater than base_lr (0.5)"),
    "negative lr": (experiment(strategies__constant__lr=-0.01), {}, "strategies.constant.lr: -0.01 must be > 0"),
    "step size zero": (experiment(strategies__clr_reset__step_size=0), {}, "strategies.clr_reset.step_size: 0"),
    "both step sizes": (experiment(strategies__clr_reset__step_size_epochs=1.0), {},
                        "strategies.clr_reset.step_size_epochs: 1.0 must be exactly one of"),
    "gamma for exp_range": (experiment(strategies__clr_reset__policy="exp_range"), {},
                            "strategies.clr_reset.gamma: 1.0 must be a number in (0, 1)"),
    "inverted range test": (experiment(range_test={"min_lr": 1.0, "max_lr": 0.001}), {},
                            "range_test.max_lr: 0.001 must be greater than min_lr"),
    "unknown range test method": (experiment(range_test={"method": "elbow"}), {},
                                  "range_test.method: 'elbow' is not one of"),
    "unknown range test monitor": (experiment(range_test={"monitor": "f1"}), {},
                                   "range_test.monitor: 'f1' is not one of loss, accuracy"),
    "unimportable scale_fn": (experiment(strategies__clr_reset__scale_fn="nowhere.module:fn"), {},
                              "strategies.clr_reset.scale_fn: 'nowhere.module:fn' cannot be imported"),
    "unimportable factory": (experiment(model={"factory": "nowhere.module:build"}), {},
                             "model.factory: 'nowhere.module:build' cannot be imported"),
    "factory that is not callable": (experiment(model={"factory": "math:pi"}), {},
                                     "model.factory: 'math:pi' must name a callable"),
    "unknown reference": (experiment(compare={"reference": "nope"}), {}, "compare.reference: 'nope'"),
    "unknown metric": (experiment(training__metrics=["acuracy"]), {}, "training.metrics: 'acuracy'"),
    "unknown loss": (experiment(training__loss="hinge_squared_wrong"), {}, "training.loss: 'hinge_squared_wrong'"),
    # data files
    "missing csv": (experiment(data={"source": "csv", "path": "nope.csv", "target": "y"}), {},
                    "data.path: 'nope.csv' does not exist"),
    "missing target column": (*csv_experiment(GOOD_CSV, target="y"), "data.target: column 'y' is not in data.csv"),
    "missing groups column": (*csv_experiment(GOOD_CSV, groups="patient"), "data.groups: column 'patient'"),
    "nan in features": (*csv_experiment("a,b,label\n1,2,0\n,3,1\n4,5,0\n6,7,1\n"), "contain NaN"),
    "nan and inf named by column and line": (*csv_experiment("a,b,label\n1,2,0\n,3,1\n4,inf,0\n6,7,1\n"),
                                             "in 2 of 4 samples ('a': line 3; 'b': line 4)"),
    "value beyond float32": (*csv_experiment("a,b,label\n1,2,0\n1e300,3,1\n4,5,0\n6,7,1\n"),
                             "too large (beyond float32) values in 1 of 4 samples ('a': line 3)"),
    "nan in target": (*csv_experiment("a,b,label\n1,2,0\n2,3,\n4,5,0\n6,7,1\n"), "missing target values"),
    "string in numeric column": (*csv_experiment("a,b,label\n1,2,0\n2,oops,1\n4,5,0\n6,7,1\n"),
                                 "column 'b' of data.csv is not numeric (e.g. 'oops' in row 3)"),
    "single class": (*csv_experiment("a,b,label\n1,2,0\n2,3,0\n4,5,0\n6,7,0\n"), "single class"),
    "empty csv": (*csv_experiment(""), "is empty"),
    "header only csv": (*csv_experiment("a,b,label\n"), "has a header but no rows"),
    "more folds than samples": (*csv_experiment("a,b,label\n1,2,0\n2,3,1\n"),
                                "cv.n_splits: 3 is more than the 2 samples"),
    "cnn without image shape": (experiment(model={"kind": "cnn"}), {}, "data.image_shape: None must be"),
    "image shape that does not fit": (experiment(data__image_shape=[5, 5, 1]), {},
                                      "data.image_shape: [5, 5, 1] holds 25 values but each sample has 6"),
    "bad override": (experiment(), {}, "--set: 'training' must look like key.path=value"),
    "duplicate key": ("name: a\nseed: 1\nseed: 2\n", {}, "duplicate key 'seed'"),
    "infinite lr": (experiment(strategies__constant__lr=float("inf")), {}, "strategies.constant.lr: inf"),
    "cyclical momentum without momentum": (
        experiment(training__optimizer={"name": "rmsprop"},
                   strategies__clr_reset__cycle_momentum={"base_momentum": 0.8, "max_momentum": 0.9}),
        {}, "strategies.clr_reset.cycle_momentum:"),
    "early stopping on an unknown score": (experiment(training__early_stopping={"monitor": "val_acc"}), {},
                                           "training.early_stopping.monitor: 'val_acc' is not one of"),
    "classification loss for regression": (
        experiment(data={"source": "synthetic", "name": "regression", "params": {"n_samples": 40}},
                   cv={"splitter": "kfold", "n_splits": 3}, training__loss="sparse_categorical_crossentropy"),
        {}, "training.loss: 'sparse_categorical_crossentropy' is a classification loss"),
    # names and places a run must not write to
    "experiment named dotdot": (experiment(name=".."), {}, "name: '..' must be a safe file name"),
    "strategy named dot": (experiment(strategies={".": {"schedule": "constant", "lr": 0.1}}), {},
                           "strategies.'.': '.' must be a safe file name"),
    "reserved device name": (experiment(name="aux"), {}, "name: 'aux' must be a safe file name"),
    "name with a slash": (experiment(strategies={"a/b": {"schedule": "constant", "lr": 0.1}}), {},
                          "strategies.'a/b': 'a/b' must be a safe file name"),
    "output dir is the working directory": (experiment(output={"dir": "."}), {},
                                            "output.dir: '.' is the working directory"),
    "output dir above the working directory": (experiment(output={"dir": ".."}), {},
                                               "output.dir: '..' contains the working directory"),
    "output dir is home": (experiment(output={"dir": "~"}), {}, "is your home directory"),
    "output dir is the root": (experiment(output={"dir": "/"}), {}, "output.dir: '/' is the file-system root"),
    "output dir with an unset variable": (experiment(output={"dir": "$KFOLD_CLR_NOT_SET/x"}), {},
                                          "output.dir: '$KFOLD_CLR_NOT_SET/x' must be a path whose environment"),
    "output dir holding the data": (experiment(data={"source": "csv", "path": "sub/data.csv", "target": "label"},
                                               cv={"splitter": "kfold", "n_splits": 3}, output={"dir": "sub"}),
                                    {"sub/data.csv": GOOD_CSV}, "output.dir: 'sub' contains"),
    # hostile YAML and sizes that cannot fit
    "billion laughs": ("a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n"
                       + "".join(f"{c}: &{c} [{', '.join(['*' + p] * 10)}]\n" for p, c in zip("abcdefgh", "bcdefghi")),
                       {}, "expands to more than 100,000 values through YAML aliases"),
    "deep nesting": ("name: x\ndata: " + "[" * 3000 + "]" * 3000 + "\n", {}, "nested more than 32 levels deep"),
    "alias inside its own anchor": ("name: &x\n  a: *x\n", {}, "invalid YAML"),
    "hidden units beyond memory": (experiment(model__hidden=[90000, 90000]), {},
                                   "model.hidden: [90000, 90000] needs at least"),
    "hidden units beyond any model": (experiment(model__hidden=[10**12]), {}, "model.hidden"),
    "generated samples beyond memory": (
        experiment(data={"source": "synthetic", "name": "classification", "params": {"n_samples": 10**12}}),
        {}, "data.params: {'n_samples': 1000000000000, 'n_features': 20} needs at least"),
    "one cycle shorter than two updates": (
        experiment(training__batch_size=200, training__epochs=1,
                   strategies={"oc": {"schedule": "one_cycle", "max_lr": 0.1}}),
        {}, "strategies.oc: Argument `total_steps`"),
    # range-test reserve and compared pairs
    "reserve half the data": (experiment(range_test={"reserve": 0.6}), {}, "range_test.reserve: 0.6 must be < 0.5"),
    "reserve not a number": (experiment(range_test={"reserve": "tenth"}), {},
                             "range_test.reserve: 'tenth' must be a valid number"),
    "reserve smaller than one row per class": (experiment(range_test={"reserve": 0.01}), {},
                                               "range_test.reserve: 0.01 cannot be set aside from 90 samples"),
    "pair with an unknown strategy": (experiment(compare={"pairs": [["constant", "nope"]]}), {},
                                      "compare.pairs.0: ['constant', 'nope'] must be two of the strategies"),
    "pair of one strategy with itself": (experiment(compare={"pairs": [["constant", "constant"]]}), {},
                                         "compare.pairs.0: ['constant', 'constant'] must be two different"),
    "pair of three": (experiment(compare={"pairs": [["constant", "clr_reset", "clr_continue"]]}), {},
                      "compare.pairs.0:"),
    "pairs and a reference": (experiment(compare={"pairs": [["constant", "clr_reset"]], "reference": "constant"}),
                              {}, "compare.pairs: [['constant', 'clr_reset']] must be omitted when `reference`"),
    "no pairs": (experiment(compare={"pairs": []}), {}, "compare.pairs: [] must be a list of [A, B]"),
    # parquet and image folders
    "missing parquet": (experiment(data={"source": "parquet", "path": "nope.parquet", "target": "y"}), {},
                        "data.path: 'nope.parquet' does not exist"),
    "parquet that is a csv": (experiment(data={"source": "parquet", "path": "d.parquet", "target": "label"}),
                              {"d.parquet": GOOD_CSV}, "is not a readable Parquet file"),
    "images without image_size": (experiment(data={"source": "images", "path": "imgs"}), {},
                                  "data.image_size: None must be [height, width]"),
    "image_size for a csv": (*csv_experiment(GOOD_CSV, image_size=[8, 8]),
                             "data.image_size: [8, 8] must be omitted unless source is 'images'"),
    "image folder that is a file": (experiment(data={"source": "images", "path": "imgs", "image_size": [8, 8]}),
                                    {"imgs": GOOD_CSV}, "data.path: 'imgs' is a file"),
    "image folder with one class": (experiment(data={"source": "images", "path": "imgs", "image_size": [8, 8]}),
                                    {"imgs/cat/a.png": "x"}, "data.path: 'imgs' holds 1 class folder ('cat')"),
    "class folder without images": (experiment(data={"source": "images", "path": "imgs", "image_size": [8, 8]}),
                                    {"imgs/cat/a.txt": "x", "imgs/dog/.b.png": "y"},
                                    "data.path: class folder 'cat' of 'imgs' holds no images"),
    "corrupt image": (experiment(data={"source": "images", "path": "imgs", "image_size": [8, 8]}),
                      {"imgs/cat/a.png": "x", "imgs/dog/b.jpg": "y"},
                      "data.path: image 'cat/a.png' cannot be read (not an image Pillow recognises)"),
    "output inside the image folder": (
        experiment(data={"source": "images", "path": "imgs", "image_size": [8, 8]}, output={"dir": "imgs/out"}),
        {"imgs/cat/a.png": "x", "imgs/dog/b.png": "y"}, "the data folder of this run"),
    # values no run could use: counts that size work and learning rates, bounded and finite
    "a million repeats on the command line": (experiment(), {}, "cv.n_repeats: 1000000 must be <= 1000"),
    "a million splits": (experiment(cv__n_splits=1_000_000), {}, "cv.n_splits: 1000000 must be <= 1000"),
    "lr of 1e308": (experiment(strategies__constant__lr=1e308), {}, "strategies.constant.lr: 1e+308 must be <= 1000"),
    "lr not a number": (experiment(strategies__constant__lr=float("nan")), {},
                        "strategies.constant.lr: nan must be a finite number"),
    "infinite clr bound": (experiment(strategies__clr_reset__max_lr=float("inf")), {},
                           "strategies.clr_reset.max_lr: inf must be a finite number"),
    "huge range test max_lr": (experiment(range_test={"max_lr": 1e9}), {},
                               "range_test.max_lr: 1000000000.0 must be <= 1000"),
    "range test of a billion updates": (experiment(range_test={"iterations": 10**9}), {},
                                        "range_test.iterations: 1000000000 must be <= 100000000"),
    "range test of a million epochs": (experiment(range_test={"epochs": 1e6}), {},
                                       "range_test.epochs: 1000000.0 must be <= 100000"),
    "step size of a billion updates": (experiment(strategies__clr_reset__step_size=10**9), {},
                                       "strategies.clr_reset.step_size: 1000000000 must be <= 100000000"),
    "step every million epochs": (experiment(strategies={"s": {"schedule": "step", "lr": 0.1,
                                                               "every_epochs": 10**6}}), {},
                                  "strategies.s.every_epochs: 1000000 must be <= 100000"),
    "a million snapshots": (experiment(strategies={"s": {"schedule": "cosine_restarts", "lr": 0.1,
                                                         "snapshots": {"keep": 10**6}}}), {},
                            "strategies.s.snapshots.keep: 1000000 must be <= 10000"),
    "tuned lr of 1e308": (experiment(strategies={"s": {"schedule": "step", "lr": [0.1, 1e308], "tune": {}}}), {},
                          "strategies.s.tune.grid.lr: 1e+308 must be less than or equal to 1000"),
    "grid of 500 values": (experiment(strategies={"s": {"schedule": "step", "lr": [0.001 * (i + 1) for i in range(500)],
                                                        "tune": {}}}), {},
                           "strategies.s.tune.grid.lr: 'a list of 500 values' must be at most 100 values"),
    "five thousand inner folds": (experiment(strategies={"s": {"schedule": "step", "lr": [0.1, 0.2],
                                                               "tune": {"n_splits": 5000}}}), {},
                                  "strategies.s.tune.n_splits: 5000 must be <= 1000"),
    "rope of an unknown metric": (experiment(compare={"rope": {"acc": 0.01}}), {},
                                  "compare.rope.acc: 0.01 must be keyed by a metric of the run: loss, accuracy"),
    "negative rope": (experiment(compare={"rope": {"loss": -1}}), {}, "compare.rope.loss: -1 must be a finite number"),
}
EXTRA_ARGS = {"bad override": ["--set", "training"],
              "a million repeats on the command line": ["--set", "cv.n_repeats=1000000"]}


@pytest.mark.parametrize("case", list(CORPUS))
def test_bad_input_gives_one_line_exit_2_and_no_results(case, tmp_path, capsys, monkeypatch):
    text, files, expected = CORPUS[case]
    monkeypatch.chdir(tmp_path)
    for name, content in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(content)
    before = sorted(tmp_path.rglob("*"))
    out = tmp_path / "results-out"
    try:
        config = yaml.safe_load(text)
    except (yaml.YAMLError, RecursionError):
        config = None  # the invalid YAML cases go to the tool as they are
    if isinstance(config, dict) and "strategies" in config:  # a whole experiment: aim its output
        config.setdefault("output", {"dir": str(out)})
        text = yaml.safe_dump(config, sort_keys=False)
    path = tmp_path / "experiment.yaml"
    path.write_text(text)
    code = main(["run", str(path), "-q", *EXTRA_ARGS.get(case, [])])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("kfold-clr: error: "), err
    assert expected in err[0], err[0]
    assert "Traceback" not in err[0]
    assert not out.exists() and not (tmp_path / "results").exists()
    assert sorted(tmp_path.rglob("*")) == sorted([*before, path])  # nothing written anywhere
    assert not (tmp_path / "pwned").exists()  # the YAML's command, run in tmp_path, never ran


def test_corpus_is_broad():
    assert len(CORPUS) >= 30


def test_npz_without_x_is_a_clear_error(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    np.savez(tmp_path / "d.npz", features=np.zeros((10, 2)), y=np.arange(10) % 2)
    path = tmp_path / "e.yaml"
    path.write_text(experiment(data={"source": "npz", "path": "d.npz"}))
    assert main(["run", str(path), "-q"]) == 2
    assert "data.path: d.npz has no array 'x'" in capsys.readouterr().err


@pytest.mark.parametrize("y, expected", [
    (np.eye(3)[np.arange(30) % 3], [0, 1, 2]),
    ((np.arange(30) % 2).reshape(-1, 1), [0, 1]),
])
def test_npz_one_hot_and_column_targets_are_accepted(tmp_path, y, expected):
    from kfold_clr.config import DataConfig
    from kfold_clr.data.datasets import load_dataset

    np.savez(tmp_path / "d.npz", x=np.random.default_rng(0).normal(size=(30, 4)) > 0, y=y)
    dataset = load_dataset(DataConfig(source="npz", path=str(tmp_path / "d.npz")))
    assert dataset.y.ndim == 1 and sorted(set(dataset.y.tolist())) == expected
    assert dataset.x.dtype == np.float32


def test_npz_with_a_matrix_target_is_a_clear_error(tmp_path):
    from kfold_clr.config import DataConfig
    from kfold_clr.data.datasets import load_dataset
    from kfold_clr.errors import DataError

    np.savez(tmp_path / "d.npz", x=np.zeros((10, 2)), y=np.ones((10, 3)))
    with pytest.raises(DataError, match=r"array 'y' of d.npz has shape \(10, 3\)"):
        load_dataset(DataConfig(source="npz", path=str(tmp_path / "d.npz")))
