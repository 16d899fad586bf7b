import copy

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import TINY_EXPERIMENT
from kfold_clr.config import apply_overrides, load_config, parse_yaml, validate_config
from kfold_clr.errors import ConfigError


def with_change(path, value):
    data = copy.deepcopy(TINY_EXPERIMENT)
    node = data
    for key in path[:-1]:
        node = node.setdefault(key, {})
    if value is _DELETE:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return data


_DELETE = object()


def test_defaults_are_filled_in():
    config = load_config(copy.deepcopy(TINY_EXPERIMENT))
    assert config.training.optimizer.name == "sgd"
    assert config.range_test.method == "regime"
    assert config.output.dir == "results/tiny"
    assert config.strategies["clr_reset"].policy == "triangular"
    resolved = config.to_dict()
    assert resolved["cv"]["n_repeats"] == 1 and resolved["execution"]["executor"] == "local"


@pytest.mark.parametrize("path, value, expected", [
    (("strategies", "clr_reset", "policy"), "triangle",
     "strategies.clr_reset.policy: 'triangle' is not one of triangular, triangular2, exp_range"),
    (("strategies", "clr_reset", "max_lr"), 0.001, "strategies.clr_reset.max_lr: 0.001 must be greater than base_lr"),
    (("strategies", "clr_reset", "step_size"), 0, "strategies.clr_reset.step_size: 0 must be >= 1"),
    (("strategies", "clr_reset", "schedule"), "cyclic", "strategies.clr_reset: 'cyclic' is not a known schedule"),
    (("strategies", "clr_reset", "stepsize"), 3, "strategies.clr_reset.stepsize: unknown key; allowed keys are"),
    (("strategies", "constant", "lr"), -0.1, "strategies.constant.lr: -0.1 must be > 0"),
    (("strategies", "constant", "lr"), "fast", "strategies.constant.lr: 'fast' must be a valid number"),
    (("strategies", "constant", "schedule"), _DELETE, "strategies.constant: "),
    (("strategies",), {}, "strategies: {} must have at least 1 entry"),
    (("trainig",), {"epochs": 3}, "trainig: unknown key; allowed keys are name, seed, data"),
    (("training", "epochs"), 0, "training.epochs: 0 must be >= 1"),
    (("training", "epochs"), 2.5, "training.epochs: 2.5 must be a valid integer"),
    (("training", "optimizer", "name"), "adagrad",
     "training.optimizer.name: 'adagrad' is not one of sgd, adam, rmsprop"),
    (("cv", "n_splits"), 1, "cv.n_splits: 1 must be >= 2"),
    (("cv", "splitter"), "loo",
     "cv.splitter: 'loo' is not one of auto, kfold, stratified, group, stratified_group, given"),
    (("data", "source"), "hdf5", "data.source: 'hdf5' is not one of sklearn, synthetic, csv, parquet, npz, images"),
    (("data", "name"), "mnist", "data.name: 'mnist' must be one of classification, regression"),
    (("data",), {"source": "csv", "target": "y"}, "data.path: None must be a file path"),
    (("range_test",), {"min_lr": 1.0, "max_lr": 0.1}, "range_test.max_lr: 0.1 must be greater than min_lr"),
    (("range_test", "method"), "elbow", "range_test.method: 'elbow' is not one of regime, steepest, valley, min_div"),
    (("compare",), {"reference": "nope"}, "compare.reference: 'nope' must be one of the strategies"),
    (("model",), {"factory": "not an import path"}, "model.factory: 'not an import path' must be an import path"),
    (("strategies", "clr_reset", "carry_weights"), True,
     "strategies.clr_reset.carry_weights: True must be only with across_folds: continue"),
    (("strategies", "clr_reset", "policy"), "exp_range", "strategies.clr_reset.gamma: 1.0 must be a number in (0, 1)"),
    (("seed",), -1, "seed: -1 must be >= 0"),
])
def test_bad_config_gives_one_line_naming_key_value_and_rule(path, value, expected):
    with pytest.raises(ConfigError) as error:
        load_config(with_change(path, value))
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(expected), message


def test_shared_bounds_must_not_also_give_fixed_bounds():
    data = with_change(("strategies", "clr_reset", "bounds"), "shared_range_test")
    with pytest.raises(ConfigError, match="strategies.clr_reset.base_lr: 0.01 must be omitted"):
        load_config(data)
    del data["strategies"]["clr_reset"]["base_lr"], data["strategies"]["clr_reset"]["max_lr"]
    assert load_config(data).strategies["clr_reset"].bounds == "shared_range_test"


def test_overrides_set_nested_values_with_yaml_types():
    data = apply_overrides(TINY_EXPERIMENT, ["training.epochs=7", "strategies.constant.lr=1e-3",
                                             "cv.shuffle=false", "output.dir=/tmp/x"])
    config = validate_config(data)
    assert config.training.epochs == 7
    assert config.strategies["constant"].lr == pytest.approx(1e-3)
    assert config.cv.shuffle is False and config.output.dir == "/tmp/x"
    assert TINY_EXPERIMENT["training"]["epochs"] == 2  # the input is not modified


@pytest.mark.parametrize("override, expected", [
    ("training", "--set: 'training' must look like key.path=value"),
    ("training.epochs.x=3", "--set: training.epochs is 2, not a section"),
])
def test_bad_overrides(override, expected):
    with pytest.raises(ConfigError, match=expected.replace(".", r"\.")):
        apply_overrides(TINY_EXPERIMENT, [override])


def test_exponent_without_dot_reads_as_float():
    data = parse_yaml("range_test: {min_lr: 1e-5, max_lr: 1E+0}")
    assert data["range_test"] == {"min_lr": 1e-5, "max_lr": 1.0}


@pytest.mark.parametrize("text, expected", [
    ("", "the file is empty"),
    ("- a\n- b\n", "the top level must be a mapping"),
    ("name: [unclosed\n", "invalid YAML at line"),
    ("name: !!python/object/apply:os.system ['echo hacked']\n", "invalid YAML"),
    ("a: 1\n  b: 2\n", "invalid YAML at line"),
])
def test_yaml_problems_are_config_errors(text, expected):
    with pytest.raises(ConfigError, match=expected):
        parse_yaml(text)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "nope.yaml")


def test_name_defaults_to_file_stem(write_yaml):
    data = copy.deepcopy(TINY_EXPERIMENT)
    del data["name"]
    assert load_config(write_yaml(data, "my-exp.yaml")).name == "my-exp"


yaml_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10, 10**6) | st.floats(allow_nan=True)
    | st.text(max_size=12),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=10), children, max_size=3),
    max_leaves=12,
)
config_keys = st.sampled_from(["name", "seed", "data", "model", "training", "cv", "range_test",
                               "strategies", "execution", "output", "compare", "other"])


@settings(max_examples=300, deadline=None)
@given(base=st.just(TINY_EXPERIMENT), key=config_keys, value=yaml_values,
       strategy_value=yaml_values, strategy_key=st.sampled_from(
           ["schedule", "lr", "policy", "base_lr", "max_lr", "step_size", "bounds", "snapshots", "x"]))
def test_loader_accepts_or_raises_its_own_error(base, key, value, strategy_value, strategy_key):
    data = copy.deepcopy(base)
    data[key] = value
    data.setdefault("strategies", {})
    if isinstance(data["strategies"], dict):
        data["strategies"]["fuzzed"] = {"schedule": "clr", strategy_key: strategy_value}
    try:
        validate_config(data)
    except ConfigError as error:
        assert "\n" not in str(error)


def test_a_loaded_config_is_frozen_and_resolved_copies_keep_its_folder(tmp_path):
    import pydantic

    path = tmp_path / "exp.yaml"
    path.write_text("name: frozen\ndata: {source: sklearn, name: iris}\n"
                    "strategies: {c: {schedule: constant, lr: 0.1}}\n")
    config = load_config(path)
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        config.training.loss = "mse"
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        config.output.dir = "elsewhere"
    assert config.base_dir == tmp_path and config.output.dir == "results/frozen" and config.model.kind == "mlp"
    resolved = config.with_training(loss="mse", metrics=["mae"])
    assert (resolved.training.loss, resolved.training.metrics) == ("mse", ["mae"])
    assert config.training.loss is None and resolved.base_dir == tmp_path  # the original is untouched
    moved = resolved.with_output_dir(tmp_path / "out")
    assert moved.output.dir == str(tmp_path / "out") and moved.base_dir == tmp_path
    assert load_config(config) is config  # loaded once, passed on
    again = load_config(config, overrides=["seed=4"])
    assert again.seed == 4 and again.base_dir == tmp_path
