"""The command line of issue 26: --only repeats instead of swallowing the YAML path, no --resume
(resuming is the default; --fresh starts over), and a fast exit without private atexit calls."""

import inspect
import subprocess
import sys

import pytest

import kfold_clr.cli.main as cli

EXAMPLE = "experiments/digits-clr.yaml"


def test_only_is_repeated_and_leaves_the_yaml_path_alone():
    args = cli.build_parser().parse_args(["run", "--only", "clr_reset", "--only", "step_decay", EXAMPLE])
    assert args.only == ["clr_reset", "step_decay"] and args.config == EXAMPLE
    assert cli.build_parser().parse_args(["run", EXAMPLE]).only is None


def test_several_names_after_one_only_are_an_argument_error(capsys):
    with pytest.raises(SystemExit) as exit_info:  # formerly: EXAMPLE taken as a strategy, config missing
        cli.build_parser().parse_args(["run", "--only", "clr_reset", "step_decay", EXAMPLE])
    assert exit_info.value.code == 2
    assert "unrecognized arguments" in capsys.readouterr().err


def test_resume_is_gone_and_fresh_is_a_flag(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.build_parser().parse_args(["run", "--resume", EXAMPLE])
    assert exit_info.value.code == 2 and "--resume" in capsys.readouterr().err
    assert cli.build_parser().parse_args(["run", "--fresh", EXAMPLE]).fresh is True
    assert cli.build_parser().parse_args(["run", EXAMPLE]).fresh is False


def test_the_exit_path_calls_no_private_atexit_function():
    source = inspect.getsource(cli)
    assert "atexit._" not in source and "_run_exitfuncs" not in source


def test_after_tensorflow_loads_the_fast_exit_still_runs_later_handlers_and_keeps_the_code(tmp_path):
    """Handlers registered while the command runs (TensorFlow's, Ray's, logging's) run before the process ends."""
    script = ("import atexit, sys\n"
              "import kfold_clr.cli.main as cli\n"
              "command = cli.main\n"
              "def main():\n"
              "    code = command()\n"
              "    atexit.register(lambda: print('handler ran', 'tensorflow' in sys.modules, flush=True))\n"
              "    return code\n"
              "cli.main = main\n"
              "sys.argv = ['kfold-clr', 'range-test', sys.argv[1], '--fold', '999']\n"
              "print('before', end='')\n"
              "cli.entry_point()\n")
    completed = subprocess.run([sys.executable, "-c", script, EXAMPLE], capture_output=True, text=True,
                               check=False, cwd=cli.pathlib.Path(__file__).resolve().parent.parent)
    assert completed.returncode == 2, completed.stderr
    assert completed.stdout.startswith("before") and "handler ran True" in completed.stdout
    assert "--fold: 999 must be between 0 and 14" in completed.stderr
