"""`kfold-clr schema` (the JSON Schema of the YAML) and `kfold-clr init` (a starter YAML)."""

import json
import pathlib
import subprocess
import sys

import jsonschema
import pytest

from kfold_clr.cli.main import main
from kfold_clr.config import SCHEDULES, ExperimentConfig, load_config, read_yaml
from kfold_clr.errors import ConfigError

ROOT = pathlib.Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "experiments").glob("*.yaml"))


@pytest.fixture
def schema(capsys):
    assert main(["schema"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.fixture
def init(tmp_path, monkeypatch, capsys):
    """Run `kfold-clr init ARGS...` in tmp_path; return (exit code, stdout, stderr)."""
    monkeypatch.chdir(tmp_path)

    def run(*args):
        code = main(["init", *args])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


# ----------------------------------------------------------------------------- schema
def test_schema_is_a_draft_2020_12_json_schema(schema):
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["title"] == "kfold-clr experiment"
    jsonschema.Draft202012Validator.check_schema(schema)


def test_schema_follows_the_models(schema):
    assert set(schema["properties"]) == set(ExperimentConfig.model_fields)
    assert {"data", "strategies"} <= set(schema["required"])
    assert "name" not in schema["required"]  # load_config takes it from the file name
    strategy = schema["properties"]["strategies"]["additionalProperties"]
    assert set(strategy["discriminator"]["mapping"]) == set(SCHEDULES)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda path: path.name)
def test_schema_accepts_every_example(schema, path):
    jsonschema.Draft202012Validator(schema).validate(read_yaml(path))


def test_schema_and_loader_agree_on_which_keys_may_be_grids(schema):
    from kfold_clr.config import STRATEGY_CLASSES, load_config

    validator = jsonschema.Draft202012Validator(schema)
    base = read_yaml(EXAMPLES[0])
    for name, strategy in STRATEGY_CLASSES.items():
        assert strategy.tunable_keys(), name
        defined = schema["$defs"][strategy.__name__]["properties"]
        grids = {key for key, prop in defined.items()
                 if any(option.get("type") == "array" for option in prop.get("anyOf", []))}
        assert grids == strategy.tunable_keys(), name  # one definition of a tunable key
    for entry in ({"schedule": "one_cycle", "max_lr": [0.1, 0.2], "tune": {}},
                  {"schedule": "clr", "base_lr": [0.001, 0.01], "max_lr": 0.1, "step_size": [2, 4], "tune": {}}):
        experiment = {**base, "strategies": {"tuned": entry}}
        validator.validate(experiment)
        load_config(experiment)
    bad = {**base, "strategies": {"tuned": {"schedule": "clr", "policy": ["triangular"], "base_lr": 0.01,
                                           "max_lr": 0.1, "step_size": 2, "tune": {}}}}
    assert list(validator.iter_errors(bad))


@pytest.mark.parametrize("change, where", [
    ({"trainig": {"epochs": 3}}, []),
    ({"strategies": {"clr": {"schedule": "clr", "polcy": "triangular", "base_lr": 0.01, "max_lr": 0.1,
                             "step_size": 4}}}, ["strategies", "clr"]),
    ({"strategies": {"clr": {"schedule": "clr_typo", "lr": 0.1}}}, ["strategies", "clr"]),
    ({"cv": {"splitter": "stratifed"}}, ["cv", "splitter"]),
])
def test_schema_rejects_the_typos_load_config_rejects(schema, change, where):
    experiment = {"data": {"source": "sklearn", "name": "digits"},
                  "strategies": {"constant": {"schedule": "constant", "lr": 0.1}}, **change}
    with pytest.raises(ConfigError):
        load_config(experiment)
    errors = jsonschema.Draft202012Validator(schema).iter_errors(experiment)
    assert [list(error.absolute_path) for error in errors] == [where]


def test_schema_output_writes_the_file(tmp_path, schema, capsys):
    path = tmp_path / "kfold-clr.schema.json"
    assert main(["schema", "--output", str(path)]) == 0
    assert json.loads(path.read_text()) == schema
    assert f"# yaml-language-server: $schema={path}" in capsys.readouterr().out
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left behind


@pytest.mark.parametrize("existing", ["file", "link"])
def test_schema_output_never_overwrites_a_file(tmp_path, capsys, existing):
    """Issue 23: `schema --output my.yaml` overwrote the user's file; it refuses, as `init` does."""
    mine = tmp_path / "my.yaml"
    mine.write_text("my experiment\n")
    path = mine if existing == "file" else tmp_path / "schema.json"
    if existing == "link":
        path.symlink_to(mine)
    assert main(["schema", "--output", str(path)]) == 2
    err = capsys.readouterr().err
    assert err == f"kfold-clr: error: {path}: already exists; schema never overwrites a file " \
                  "(remove it first, or pick another --output)\n"
    assert mine.read_text() == "my experiment\n"


def test_schema_output_refuses_a_directory(tmp_path, capsys):
    assert main(["schema", "--output", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("kfold-clr: error: --output:") and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_schema_and_init_do_not_load_tensorflow(tmp_path):
    script = ("import sys\n"
              "from kfold_clr.cli.main import main\n"
              "codes = [main(['schema', '--output', 'kfold-clr.schema.json']), main(['init', 'demo'])]\n"
              "print(*codes, 'tensorflow' in sys.modules)\n")
    completed = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True,
                               check=False)
    assert completed.stdout.splitlines()[-1].split() == ["0", "0", "False"], completed.stderr


# ----------------------------------------------------------------------------- init
def test_init_writes_a_commented_starter_that_loads(init, tmp_path, schema):
    code, out, err = init("demo")
    assert code == 0 and err == ""
    path = tmp_path / "demo.yaml"
    text = path.read_text()
    assert text.splitlines()[0] == "# yaml-language-server: $schema=kfold-clr.schema.json"
    for comment in ("#   kfold-clr schema --output kfold-clr.schema.json",
                    "# hand-tuned baseline: halve the LR every 6 epochs",
                    "# does CLR beat the hand-tuned schedule?"):
        assert comment in text
    config = load_config(path)
    assert config.name == "demo" and config.output.dir == "results/demo"
    assert (config.data.source, config.data.name) == ("sklearn", "digits")
    assert (config.cv.splitter, config.cv.n_splits, config.cv.n_repeats) == ("stratified", 5, 3)
    assert config.range_test.reserve == 0.2
    assert {name: strategy.schedule for name, strategy in config.strategies.items()} == {
        "step_decay": "step", "clr_reset": "clr", "clr_continue": "clr", "clr_shared": "clr", "clr_per_fold": "clr"}
    assert config.strategies["clr_continue"].across_folds == "continue"
    assert config.strategies["clr_shared"].bounds == "shared_range_test"
    assert config.strategies["clr_per_fold"].bounds == "per_fold_range_test"
    assert len(config.compare.pairs) == 4
    jsonschema.Draft202012Validator(schema).validate(read_yaml(path))
    assert out.splitlines() == ["wrote demo.yaml", "next:", "  kfold-clr validate demo.yaml",
                                "  kfold-clr run demo.yaml"]


def test_init_with_a_csv_and_its_target(init, tmp_path, schema):
    code, _, err = init("patients", "--data", "my.csv", "--target", "y")
    assert code == 0 and err == ""
    path = tmp_path / "patients.yaml"
    config = load_config(path)  # the config alone: my.csv need not exist yet
    assert (config.data.source, config.data.path, config.data.target) == ("csv", "my.csv", "y")
    assert config.cv.splitter == "auto"  # the task is known only once the data is read
    assert "# groups: patient" in path.read_text()
    jsonschema.Draft202012Validator(schema).validate(read_yaml(path))


def test_init_without_a_target_writes_a_placeholder_and_says_so(init, tmp_path):
    code, _, err = init("patients", "--data", "my.csv")
    assert code == 0
    assert load_config(tmp_path / "patients.yaml").data.target == "label"
    assert "target: label" in (tmp_path / "patients.yaml").read_text()
    assert "kfold-clr: warning: data.target:" in err


def test_init_names_the_data_from_the_yaml_folder(init, tmp_path):
    code, out, _ = init("demo", "--data", "data/my table.csv", "--target", "y #1", "--output", "configs/demo.yaml")
    assert code == 0
    config = load_config(tmp_path / "configs" / "demo.yaml")
    assert config.data.path == "../data/my table.csv" and config.data.target == "y #1"
    assert (config.base_dir / config.data.path).resolve() == tmp_path / "data" / "my table.csv"
    assert "  kfold-clr run configs/demo.yaml" in out


def test_init_quotes_a_name_yaml_would_misread(init, tmp_path):
    assert init("true")[0] == 0
    assert load_config(tmp_path / "true.yaml").name == "true"


def test_init_never_overwrites(init, tmp_path):
    path = tmp_path / "demo.yaml"
    path.write_text("mine\n")
    code, out, err = init("demo")
    assert code == 2 and out == ""
    assert err == f"kfold-clr: error: {pathlib.Path('demo.yaml')}: already exists; init never overwrites a file " \
                  "(pick another NAME or --output)\n"
    assert path.read_text() == "mine\n"


@pytest.mark.parametrize("args, message", [
    (["../escape"], "NAME: '../escape' must be a safe file name"),
    (["CON"], "NAME: 'CON' must be a safe file name"),
    (["demo", "--data", "table.xlsx"], "--data: 'table.xlsx' must be a file ending in .csv"),
    (["demo", "--target", "y"], "--target: 'y' is only used with --data"),
    (["demo", "--data", "arrays.npz", "--target", "y"], "--target: 'y' is not used with an .npz file"),
])
def test_init_refuses_bad_arguments_in_one_line(init, tmp_path, args, message):
    code, _, err = init(*args)
    assert code == 2
    assert err.startswith(f"kfold-clr: error: {message}") and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_the_default_starter_passes_validate(init, tmp_path, capsys):
    """The data and splits check too: the starter runs as it is written."""
    init("demo")
    assert main(["validate", "demo.yaml"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# OK: scikit-learn digits") and "15 splits (stratified" in out
