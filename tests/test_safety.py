"""Safety: a run touches only its own results directory, its lock cannot lie, and it keeps
a record of every run and of the code and versions behind every saved fold."""

import copy
import json
import os
import pathlib
import socket
import subprocess
import sys
import textwrap

import pytest
import yaml

from kfold_clr.cli.main import main
from kfold_clr.errors import ResultsError
from kfold_clr.storage import ownership
from kfold_clr.storage.lock import RunLock

USER_FILES = {"config.yaml": "my own config\n", "report.md": "# my notes\n", "folds/keep.txt": "mine\n",
              "plots/figure.png": "not really a png\n", "meta.json": "{}\n"}


def plant(folder):
    """Files a user wrote, with the names a run writes."""
    for name, text in USER_FILES.items():
        path = pathlib.Path(folder) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def untouched(folder):
    return all((pathlib.Path(folder) / name).read_text() == text for name, text in USER_FILES.items())


def one_constant(tiny_experiment, **output):
    experiment = copy.deepcopy(tiny_experiment)
    experiment["strategies"] = {"constant": experiment["strategies"]["constant"]}
    experiment["training"]["epochs"] = 1
    experiment["output"] = output or experiment["output"]
    return experiment


def run_cli(path, *args):
    return main(["run", str(path), "-q", *args])


def last_error(capsys):
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines and lines[-1].startswith("kfold-clr: error: "), lines
    return lines[-1]


# ----------------------------------------------------------------------------- ownership
def test_output_dir_dot_is_refused_and_fresh_deletes_nothing(tiny_experiment, tmp_path, monkeypatch, capsys):
    work = tmp_path / "work"
    work.mkdir()
    plant(work)
    monkeypatch.chdir(work)
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(one_constant(tiny_experiment, dir=".")))
    assert run_cli(path, "--fresh") == 2
    assert "is the working directory" in last_error(capsys)
    assert untouched(work) and not (work / ownership.MARKER).exists()


def test_name_dotdot_cannot_aim_results_at_the_working_directory(tiny_experiment, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    plant(tmp_path)
    experiment = one_constant(tiny_experiment)
    del experiment["output"]
    experiment["name"] = ".."
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(experiment))
    assert run_cli(path, "--fresh") == 2
    assert "name: '..' must be a safe file name" in last_error(capsys)
    assert untouched(tmp_path)


@pytest.mark.parametrize("name", [".", "..", "a/b", "con", "NUL.txt", ".hidden", "x..y", "ends.", "", "a b"])
def test_unsafe_strategy_names_are_config_errors(tiny_experiment, write_yaml, capsys, name):
    experiment = one_constant(tiny_experiment)
    experiment["strategies"] = {name: experiment["strategies"]["constant"]}
    assert run_cli(write_yaml(experiment), "--fresh", "--only", name) == 2
    assert "must be a safe file name" in last_error(capsys)
    assert not pathlib.Path(experiment["output"]["dir"]).exists()


def test_the_yaml_folder_and_folders_holding_the_data_are_refused(tiny_experiment, tmp_path, monkeypatch, capsys):
    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    rows = ["a,b,label"] + [f"{i},{i % 5},{i % 2}" for i in range(40)]
    (project / "data" / "table.csv").write_text("\n".join(rows) + "\n")
    monkeypatch.chdir(tmp_path)
    experiment = one_constant(tiny_experiment)
    experiment["data"] = {"source": "csv", "path": "data/table.csv", "target": "label"}
    path = project / "exp.yaml"
    for target, expected in [(project, "contains"), (project / "data", "contains"), (project / "data/..", "contains")]:
        experiment["output"] = {"dir": str(target)}
        path.write_text(yaml.safe_dump(experiment))
        assert run_cli(path, "--fresh") == 2
        assert expected in last_error(capsys)
    assert sorted(p.name for p in project.rglob("*")) == ["data", "exp.yaml", "table.csv"]


def test_home_is_refused_and_tilde_is_expanded(tiny_experiment, tmp_path, monkeypatch, capsys):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("RESULTS_ROOT", str(tmp_path / "env-results"))
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(one_constant(tiny_experiment, dir="~")))
    assert run_cli(path) == 2
    assert "is your home directory" in last_error(capsys)
    path.write_text(yaml.safe_dump(one_constant(tiny_experiment, dir="~/runs/tiny")))
    assert run_cli(path) == 0
    assert (home / "runs" / "tiny" / "folds.csv").exists() and not (tmp_path / "~").exists()
    path.write_text(yaml.safe_dump(one_constant(tiny_experiment, dir="$RESULTS_ROOT/tiny")))
    assert run_cli(path) == 0
    assert (tmp_path / "env-results" / "tiny" / "folds.csv").exists()
    path.write_text(yaml.safe_dump(one_constant(tiny_experiment, dir="$NOT_SET_ANYWHERE/tiny")))
    assert run_cli(path) == 2
    assert "$NOT_SET_ANYWHERE is not" in last_error(capsys)


def test_an_existing_folder_of_user_files_is_refused(tiny_experiment, write_yaml, tmp_path, capsys):
    out = tmp_path / "mine"
    plant(out)
    path = write_yaml(one_constant(tiny_experiment, dir=str(out)))
    assert run_cli(path, "--fresh") == 2
    error = last_error(capsys)
    assert "already holds files that kfold_clr did not write" in error and str(out) in error
    assert untouched(out)


def test_an_empty_folder_is_claimed_and_a_marked_one_reused(tiny_experiment, write_yaml, tmp_path):
    out = tmp_path / "empty"
    out.mkdir()
    path = write_yaml(one_constant(tiny_experiment, dir=str(out)))
    assert run_cli(path) == 0
    marker = json.loads((out / ownership.MARKER).read_text())
    assert set(marker) == {"kfold_clr", "created"}
    (out / "notes.txt").write_text("a user's note inside a results directory")
    assert run_cli(path, "--fresh") == 0
    assert (out / "notes.txt").exists()  # --fresh deletes only what a run writes


def test_a_symlinked_folder_is_a_clear_error_not_a_loop(tiny_experiment, write_yaml, tmp_path, capsys):
    out, elsewhere = tmp_path / "results", tmp_path / "elsewhere"
    path = write_yaml(one_constant(tiny_experiment, dir=str(out)))
    assert run_cli(path) == 0
    elsewhere.mkdir()
    (elsewhere / "precious.txt").write_text("keep me")
    ownership.remove(out / "folds")
    (out / "folds").symlink_to(elsewhere, target_is_directory=True)
    assert run_cli(path, "--fresh") == 2
    assert f"{out / 'folds'}: is a symbolic link (to {elsewhere}); kfold_clr never writes or deletes through a link" \
        in last_error(capsys)
    assert (elsewhere / "precious.txt").read_text() == "keep me"


def test_a_failed_deletion_is_an_error(tiny_experiment, write_yaml, tmp_path, monkeypatch, capsys):
    import shutil

    out = tmp_path / "results"
    path = write_yaml(one_constant(tiny_experiment, dir=str(out)))
    assert run_cli(path) == 0

    def refuse(path, *args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(shutil, "rmtree", refuse)
    assert run_cli(path, "--fresh") == 2
    assert "cannot be deleted (Permission denied)" in last_error(capsys)


def test_inside_refuses_names_that_leave_the_parent(tmp_path):
    for parts in [("..",), (".",), ("a", ".."), ("/etc",), ("a/b",), ("",)]:
        with pytest.raises(ResultsError):
            ownership.inside(tmp_path, *parts)
    (tmp_path / "link").symlink_to("/")
    with pytest.raises(ResultsError, match="outside"):
        ownership.inside(tmp_path, "link", "etc")
    assert ownership.inside(tmp_path, "folds", "s1", "r0_f0.json") == tmp_path / "folds" / "s1" / "r0_f0.json"


def test_report_refuses_a_folder_kfold_clr_did_not_write(tmp_path, capsys):
    plant(tmp_path / "other")
    assert main(["report", str(tmp_path / "other")]) == 2
    assert "not a kfold_clr results directory" in last_error(capsys)
    assert untouched(tmp_path / "other")


# ----------------------------------------------------------------------------- lock
def test_a_held_lock_names_its_holder(tiny_experiment, write_yaml, tmp_path, capsys):
    out = tmp_path / "results"
    ownership.claim(out)
    lock = RunLock(out).acquire()
    try:
        assert run_cli(write_yaml(one_constant(tiny_experiment, dir=str(out)))) == 2
        error = last_error(capsys)
        assert "in use by another run" in error
        assert f"process {os.getpid()} on {socket.gethostname()}, started" in error
    finally:
        lock.release()
    assert not (out / "folds.csv").exists()


def test_a_lock_dies_with_its_process_even_when_the_pid_is_reused(tmp_path):
    """A killed holder (or a restarted container, a vanished host) leaves a lock file and owner
    notes behind; neither counts, whatever pid they name."""
    ownership.claim(tmp_path / "r")
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from kfold_clr.storage.lock import RunLock
        lock = RunLock({str(tmp_path / 'r')!r}).acquire()
        print("held", flush=True)
        time.sleep(60)
    """)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(ResultsError, match=f"process {holder.pid} on"):
        RunLock(tmp_path / "r").acquire()
    holder.kill()
    holder.wait()
    notes = tmp_path / "r" / ".lock.owner"
    assert notes.exists()  # left behind by the killed holder
    notes.write_text(json.dumps({"pid": os.getpid(), "host": "gone-host", "started": "earlier"}))
    lock = RunLock(tmp_path / "r").acquire()  # the pid named is alive (ours): irrelevant
    assert lock.held
    lock.release()


# ----------------------------------------------------------------------------- provenance
def test_meta_json_keeps_every_run(tiny_experiment, write_yaml):
    experiment = copy.deepcopy(tiny_experiment)
    experiment["training"]["epochs"] = 1
    path = write_yaml(experiment)
    assert run_cli(path, "--only", "constant") == 0
    assert run_cli(path) == 0
    runs = json.loads((pathlib.Path(experiment["output"]["dir"]) / "meta.json").read_text())["runs"]
    assert len(runs) == 2
    assert "--only constant" in runs[0]["command"] and "--only" not in runs[1]["command"]
    for run in runs:
        assert run["outcome"] == "finished" and run["finished"] >= run["started"]
        assert {"kfold_clr", "keras", "tensorflow", "scikit_learn", "host", "git_commit"} <= set(run)


def test_editing_the_model_factory_refuses_stale_folds(tiny_experiment, write_yaml, tmp_path, monkeypatch, capsys):
    module = tmp_path / "lab_models.py"
    source = textwrap.dedent("""
        import keras

        def small(input_shape, n_outputs):
            inputs = keras.Input(shape=input_shape)
            hidden = keras.layers.Dense(8, activation="relu")(inputs)
            return keras.Model(inputs, keras.layers.Dense(n_outputs, activation="softmax")(hidden))
    """)
    module.write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    experiment = one_constant(tiny_experiment)
    experiment["model"] = {"factory": "lab_models:small"}
    path = write_yaml(experiment)
    assert run_cli(path) == 0
    assert run_cli(path) == 0  # unchanged code: every fold is reused
    module.write_text(source.replace("Dense(8,", "Dense(9,"))
    assert run_cli(path) == 2
    assert "from a different config" in last_error(capsys)


def test_other_library_versions_need_fresh_or_accept_versions(tiny_experiment, write_yaml, capsys):
    experiment = one_constant(tiny_experiment)
    out = pathlib.Path(experiment["output"]["dir"])
    path = write_yaml(experiment)
    assert run_cli(path) == 0
    record_path = sorted((out / "folds" / "constant").glob("*.json"))[0]
    record = json.loads(record_path.read_text())
    record["versions"]["keras"] = "3.0.0"
    record_path.write_text(json.dumps(record))
    assert run_cli(path) == 2
    error = last_error(capsys)
    assert "keras 3.0.0 ->" in error and "--fresh" in error and "--accept-versions" in error
    assert run_cli(path, "--accept-versions") == 0
    runs = json.loads((out / "meta.json").read_text())["runs"]
    assert runs[-1]["accepted_version_changes"][0].startswith("keras 3.0.0 ->")
    assert len(runs) == 2  # the refused run wrote nothing


# ----------------------------------------------------------------------------- hostile YAML, sizes
def test_yaml_merge_keys_share_settings_between_strategies(write_yaml):
    from kfold_clr.config import load_config

    path = write_yaml(textwrap.dedent("""
        name: merged
        data: {source: sklearn, name: iris}
        strategies:
          reset: &clr {schedule: clr, base_lr: 0.01, max_lr: 0.1, step_size: 4}
          continue:
            <<: *clr
            across_folds: continue
            max_lr: 0.2
    """))
    strategies = load_config(path).strategies
    assert strategies["continue"].across_folds == "continue" and strategies["continue"].max_lr == 0.2
    assert strategies["continue"].base_lr == 0.01 and strategies["reset"].across_folds == "reset"


def test_a_dict_config_is_bounded_too():
    from kfold_clr.config import load_config
    from kfold_clr.errors import ConfigError

    shared = [0] * 1000
    wide = {"name": "x", "data": {"source": "sklearn", "name": "iris", "params": {"a": [shared] * 200}}}
    with pytest.raises(ConfigError, match="expands to more than 100,000 values"):
        load_config(wide)
    deep = inner = {}
    for _ in range(100):
        inner["x"] = {}
        inner = inner["x"]
    with pytest.raises(ConfigError, match="nested more than 32 levels"):
        load_config({"name": "x", "data": deep})


@pytest.mark.parametrize("model", [
    {"kind": "mlp", "hidden": [32, 16]},
    {"kind": "mlp", "hidden": [32], "batch_norm": True},
    {"kind": "cnn", "filters": [8, 16], "hidden": [24]},
])
def test_the_memory_estimate_counts_the_models_weights(model):
    import keras

    from kfold_clr.config import ModelConfig
    from kfold_clr.data.memory import model_parameters
    from kfold_clr.training.models import build_model

    cfg = ModelConfig(**model)
    shape = (8, 8, 1) if cfg.kind == "cnn" else (64,)
    actual = build_model(cfg, input_shape=shape, n_outputs=10, task="classification").count_params()
    keras.backend.clear_session()
    estimate = model_parameters(cfg, input_shape=shape, n_outputs=10)
    assert actual <= estimate <= 1.1 * actual


def test_sizes_beyond_the_memory_limit_are_refused_with_the_estimate():
    from kfold_clr.config import load_config
    from kfold_clr.data.memory import check_model_size, check_synthetic_size
    from kfold_clr.errors import ConfigError, DataError

    check_synthetic_size({"n_samples": 1000, "n_features": 10}, name="classification", limit=10**6)
    with pytest.raises(DataError, match=r"data.params: .* needs at least 1.53 MiB .* than the 977 KiB"):
        check_synthetic_size({"n_samples": 10_000, "n_features": 10}, name="classification", limit=10**6)
    config = load_config({"name": "x", "data": {"source": "sklearn", "name": "iris"},
                          "model": {"hidden": [1000]}, "strategies": {"c": {"schedule": "constant", "lr": 0.1}}})
    check_model_size(config, input_shape=(4,), n_outputs=3, limit=10**6)
    with pytest.raises(ConfigError, match=r"model.hidden: \[1000\] needs at least .* for 11,012 weights"):
        check_model_size(config, input_shape=(4,), n_outputs=3, limit=10**5)


def test_a_name_taken_from_an_unsafe_file_name_says_so(tiny_experiment, tmp_path, capsys):
    experiment = one_constant(tiny_experiment)
    del experiment["name"]
    path = tmp_path / "my experiment.yaml"
    path.write_text(yaml.safe_dump(experiment))
    assert run_cli(path) == 2
    assert "name: 'my experiment' (taken from the file name) must be a safe file name" in last_error(capsys)
