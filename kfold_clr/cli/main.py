"""Command line: ``kfold-clr VERB ...`` / ``python -m kfold_clr VERB ...``.

``main(argv) -> int`` parses the arguments and dispatches to plain functions that
return exit codes: 0 success, 1 a run finished with failed folds, 2 bad input
(one line on stderr, no traceback unless ``--debug``), 128 + the signal number when
stopped by SIGINT (130), SIGTERM (143) or SIGHUP (129): finished folds are saved and
the same command resumes.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import pathlib
import shlex
import sys
from typing import TYPE_CHECKING, TextIO

from kfold_clr import __version__
from kfold_clr.errors import KfoldClrError
from kfold_clr.process.runtime import import_tensorflow_quietly

if TYPE_CHECKING:
    from collections.abc import Sequence

WITHOUT_TENSORFLOW = ("report", "schema", "init")  # verbs that never build a model


def _quiet_tensorflow() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("MPLBACKEND", "Agg")


def _one_line_warnings() -> None:
    """Show warnings as `kfold-clr: warning: ...`, once each, without source lines."""
    import warnings

    def show(message: Warning | str, category: type[Warning], filename: str, lineno: int,
             file: TextIO | None = None, line: str | None = None) -> None:
        print(f"kfold-clr: warning: {message}", file=file or sys.stderr)

    warnings.showwarning = show
    warnings.simplefilter("default")
    for noisy in ("tensorflow", "keras", "absl", "google"):
        warnings.filterwarnings("ignore", module=noisy)


def cmd_run(args: argparse.Namespace) -> int:
    from kfold_clr.execution.experiment import run_experiment

    results = run_experiment(
        args.experiment,
        only=args.only,
        resume=not args.fresh,
        verbosity=args.verbosity,
        accept_versions=args.accept_versions,
        command=args.command_line,
    )
    return 1 if results.n_failed else 0


def cmd_range_test(args: argparse.Namespace) -> int:
    from kfold_clr.cli.commands import run_range_test_command

    run_range_test_command(args.experiment, fold=args.fold)
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from kfold_clr.cli.commands import validate_experiment

    print(validate_experiment(args.experiment), end="")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from kfold_clr.report import build_report
    from kfold_clr.storage.store import ResultsStore

    store = ResultsStore(args.results_dir).open_existing()
    try:
        path = build_report(store.directory)
    finally:
        store.close()
    print(f"report written to {path}")
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    from kfold_clr.cli.scaffold import json_schema

    text = json.dumps(json_schema(), indent=2) + "\n"
    if args.output is None:
        print(text, end="")
        return 0
    path = pathlib.Path(args.output)
    if path.is_dir() or args.output.endswith(("/", os.sep)):
        raise KfoldClrError(f"--output: {args.output!r} is a directory; give a file path such as "
                            f"{str(path / 'kfold-clr.schema.json')!r}")
    _write_new_file(path, text, verb="schema", hint="remove it first, or pick another --output")
    print(f"schema written to {path}; for autocomplete, make this the first line of an experiment YAML "
          "in this folder:\n"
          f"# yaml-language-server: $schema={path}")
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    from kfold_clr.cli.scaffold import data_path_for, starter_yaml

    path = pathlib.Path(args.output if args.output is not None else f"{args.name}.yaml")
    data = data_path_for(path, args.data) if args.data is not None else None
    text = starter_yaml(args.name, data=data, target=args.target)
    _write_new_file(path, text, verb="init", hint="pick another NAME or --output")
    quoted = shlex.quote(str(path))
    print(f"wrote {path}\nnext:\n  kfold-clr validate {quoted}\n  kfold-clr run {quoted}")
    return 0


def _write_new_file(path: pathlib.Path, text: str, *, verb: str, hint: str) -> None:
    """Write `text` to `path`, which must not exist yet ("x": never overwrite, never through a link)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "x", encoding="utf-8") as stream:
            stream.write(text)
    except OSError as error:
        if os.path.lexists(path):
            raise KfoldClrError(f"{path}: already exists; {verb} never overwrites a file ({hint})") from None
        raise KfoldClrError(f"{path}: cannot be written ({error.strerror or error})") from None


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    verbosity = common.add_mutually_exclusive_group()
    verbosity.add_argument("-q", "--quiet", dest="verbosity", action="store_const", const=0,
                           help="print only warnings, errors and the final summary")
    verbosity.add_argument("-v", "--verbose", dest="verbosity", action="store_const", const=2,
                           help="print per-epoch lines as well as the progress display")
    common.set_defaults(verbosity=1)

    parser = argparse.ArgumentParser(
        prog="kfold-clr",
        description="K-fold cross-validation of Keras models trained with cyclical learning rates.",
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    verbs = parser.add_subparsers(dest="command", metavar="VERB")

    overrides = argparse.ArgumentParser(add_help=False)
    overrides.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE",
                           help="override a config value, e.g. --set training.epochs=4 (repeatable)")

    run = verbs.add_parser("run", parents=[common, overrides], help="run the whole experiment")
    run.add_argument("config", help="experiment YAML file")
    run.add_argument("--fresh", action="store_true",
                     help="discard earlier results in the output directory and start over "
                          "(by default a run resumes: folds finished with the same config are kept)")
    run.add_argument("--only", action="append", metavar="STRATEGY",
                     help="run only this strategy (repeat for more: --only a --only b)")
    run.add_argument("--accept-versions", action="store_true",
                     help="keep saved folds computed with other versions of kfold_clr, Keras, "
                          "TensorFlow or scikit-learn (refused by default)")
    run.set_defaults(handler=cmd_run)

    range_test = verbs.add_parser("range-test", parents=[common, overrides],
                                  help="LR range test alone: CSV, plot and suggested bounds")
    range_test.add_argument("config", help="experiment YAML file")
    range_test.add_argument("--fold", type=int, default=0,
                            help="run it on this fold's training split (default 0)")
    range_test.set_defaults(handler=cmd_range_test)

    validate = verbs.add_parser("validate", parents=[common, overrides],
                                help="check the config and data without training")
    validate.add_argument("config", help="experiment YAML file")
    validate.set_defaults(handler=cmd_validate)

    report = verbs.add_parser("report", parents=[common],
                              help="rebuild tables, plots and report.md from saved results")
    report.add_argument("results_dir", help="a results directory written by `run`")
    report.set_defaults(handler=cmd_report)

    schema = verbs.add_parser("schema", parents=[common],
                              help="print the JSON Schema of the experiment YAML (editor autocomplete)")
    schema.add_argument("--output", metavar="FILE", help="write it to FILE instead of printing it")
    schema.set_defaults(handler=cmd_schema)

    init = verbs.add_parser("init", parents=[common], help="write a commented starter experiment YAML")
    init.add_argument("name", metavar="NAME", help="the experiment's name; results go to results/NAME")
    init.add_argument("--data", metavar="PATH", help="a data file (.csv, .npz, ...); default: scikit-learn's digits")
    init.add_argument("--target", metavar="COLUMN", help="the target column of the --data table")
    init.add_argument("--output", metavar="FILE", help="where to write it (default: NAME.yaml); never overwritten")
    init.set_defaults(handler=cmd_init)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    args.command_line = " ".join(["kfold-clr", *argv])
    if args.command is None:
        parser.print_help()
        return 0
    _quiet_tensorflow()
    _one_line_warnings()
    try:
        if getattr(args, "config", None) is not None:
            from kfold_clr.config import load_config

            # Loaded once, here: a bad config fails before TensorFlow loads.
            args.experiment = load_config(args.config, overrides=args.set)
        if args.command not in WITHOUT_TENSORFLOW:
            import_tensorflow_quietly()
        return args.handler(args)
    except KfoldClrError as error:
        if args.debug:
            raise
        print(f"kfold-clr: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt as stop:
        from kfold_clr.process.interrupt import exit_code

        done = ("finished folds are saved. Run the same command again to resume." if args.command == "run"
                else "run it again when you are ready.")
        print(f"\nkfold-clr: interrupted ({stop.args[0] if stop.args else 'SIGINT'}); {done}", file=sys.stderr)
        return exit_code(stop)


def entry_point() -> None:
    """`kfold-clr` and `python -m kfold_clr`: run `main`, then leave without tearing TensorFlow down.

    Interpreter shutdown with TensorFlow loaded takes about a second (module and C++
    teardown) and does nothing for the user: every result is written and closed by
    then. `sys.exit` joins the other threads and runs the exit handlers as usual; the
    last of them (registered first, and handlers run last-registered first) flushes
    the output and ends the process at once.
    """
    atexit.register(_leave_now)
    code = main()
    _LEAVING["code"] = code if "tensorflow" in sys.modules else None
    sys.exit(code)


_LEAVING = {"code": None}  # the exit code `_leave_now` ends the process with; None: a normal exit


def _leave_now() -> None:
    code = _LEAVING["code"]
    if code is None:
        return
    if "logging" in sys.modules:  # registered before us when imported early: its handlers flushed here
        import logging

        logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass  # closed pipe or stream: nothing more can reach it
    os._exit(code)
