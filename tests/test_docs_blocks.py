"""The documentation cannot drift from the code: every fenced block of the docs and the README runs
or is checked here, and the generated reference pages are what docs/gen_reference.py writes (issue 26)."""

import pathlib
import re
import shlex
import shutil
import sys

import pytest
import yaml

from kfold_clr.cli.main import build_parser, main
from kfold_clr.config import load_config

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "docs"))

import gen_reference  # noqa: E402

PAGES = sorted((ROOT / "docs").rglob("*.md")) + [ROOT / "README.md"]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
LANGUAGES = {"python", "bash", "yaml", "text"}
BASE = {"name": "docs-check", "data": {"source": "sklearn", "name": "digits"},
        "strategies": {"constant": {"schedule": "constant", "lr": 0.01}}}
TOOLS = {"tensorboard", "ray", "mkdocs"}  # commands of other programs the docs show, not run here


def blocks(language):
    found = []
    for page in PAGES:
        for number, match in enumerate(FENCE.finditer(page.read_text(encoding="utf-8"))):
            if match.group(1) == language:
                found.append(pytest.param(page, match.group(2), id=f"{page.relative_to(ROOT)}#{number}"))
    return found


def page_blocks(language):
    """One parameter per page that has `language` blocks: the blocks in order (they share state)."""
    pages = {}
    for param in blocks(language):
        page, code = param.values
        pages.setdefault(page, []).append(code)
    return [pytest.param(page, codes, id=str(page.relative_to(ROOT))) for page, codes in pages.items()]


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A scratch working directory holding what the docs' commands read: the example configs and results."""
    shutil.copytree(ROOT / "experiments", tmp_path / "experiments")
    shutil.copytree(ROOT / "results" / "digits-clr", tmp_path / "results" / "digits-clr",
                    ignore=shutil.ignore_patterns("folds", "range_tests", ".lock*"))
    monkeypatch.setenv("KFOLD_CLR_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_the_generated_reference_pages_are_current():
    assert gen_reference.main(["--check"]) == 0, "run python docs/gen_reference.py"


def test_the_generated_yaml_reference_lists_every_key_of_every_section():
    from kfold_clr.cli.scaffold import json_schema

    page = gen_reference.PAGES["experiment-yaml"].read_text(encoding="utf-8")
    schema = json_schema()
    for name, section in schema["$defs"].items():
        text = page.split(f"### {name}\n", 1)[1].split("\n### ", 1)[0]
        for key in section.get("properties", {}):
            assert f"| `{key}` |" in text, (name, key)
    clr = page.split("### ClrStrategy\n", 1)[1].split("\n### ", 1)[0]
    assert "| `policy` | one of `triangular`, `triangular2`, `exp_range` | `triangular` |" in clr
    assert "| `across_folds` | one of `reset`, `continue` | `reset` |" in clr


def test_the_cli_reference_lists_every_verb_and_flag():
    page = gen_reference.PAGES["cli"].read_text(encoding="utf-8")
    parser = build_parser()
    verbs = next(action for action in parser._actions if action.dest == "command")
    for name, sub in verbs.choices.items():
        text = page.split(f"## {name}\n", 1)[1].split("\n## ", 1)[0]
        for action in sub._actions:
            for flag in [] if action.dest == "help" else action.option_strings:
                assert f"`{flag}`" in text, (name, flag)
    assert "`--resume`" not in page and "`--only` `STRATEGY` | run only this strategy (repeat" in page


def test_every_code_block_names_a_language_the_checks_know():
    for page in PAGES:
        for match in FENCE.finditer(page.read_text(encoding="utf-8")):
            assert match.group(1) in LANGUAGES, f"{page.relative_to(ROOT)}: ```{match.group(1)} block"


@pytest.mark.parametrize("page, code", blocks("yaml"))
def test_yaml_blocks_are_valid_experiments_or_sections_of_one(page, code):
    text = yaml.safe_load(code)
    assert isinstance(text, dict), code
    experiment = text if {"data", "strategies"} <= set(text) else _merged(BASE, text)
    load_config(experiment, base_dir=ROOT)


def _merged(base, extra):
    merged = dict(base)
    for key, value in extra.items():
        merged[key] = _merged(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) \
            else value
    return merged


def test_the_image_tutorial_shows_the_committed_config():
    page = (ROOT / "docs" / "tutorials" / "images-drivers.md").read_text(encoding="utf-8")
    shown = [yaml.safe_load(m.group(2)) for m in FENCE.finditer(page) if m.group(1) == "yaml"]
    assert yaml.safe_load((ROOT / "experiments" / "images-drivers.yaml").read_text()) in shown


@pytest.mark.parametrize("page, codes", page_blocks("bash"))
def test_shell_blocks_run_or_parse(page, codes, workdir, capsys):
    extras = _extras()
    for code in codes:
        for line in code.splitlines():
            for command in " ".join(shlex.split(line, comments=True)).split("&&"):
                words = shlex.split(command)
                if words:
                    _check_command(words, extras, capsys)


def _extras() -> set:
    """The names of pyproject.toml's optional dependencies (tomllib is Python 3.11+; the package supports 3.10)."""
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    section = text.split("[project.optional-dependencies]", 1)[1].split("\n[", 1)[0]
    return set(re.findall(r"^([\w-]+) = ", section, re.M))


PASS_THROUGH = {"benchmarks/time_parts.py"}  # scripts that take a kfold-clr command line


def _check_command(words, extras, capsys):
    if words[:2] == ["pip", "install"]:
        for spec in words[2:]:
            for extra in re.findall(r"\[([^\]]*)\]", spec):
                assert set(extra.split(",")) <= set(extras), spec
        return
    if words[0] == "kfold-clr" or words[:3] == ["python", "-m", "kfold_clr"]:
        _check_kfold_clr(words[1:] if words[0] == "kfold-clr" else words[3:], capsys)
        return
    if words[:3] == ["python", "-m", "pytest"]:
        return
    if words[0] == "python":
        script = ROOT / words[1]
        assert script.is_file() and script.parts[-2] in ("benchmarks", "docs"), words
        if words[1] in PASS_THROUGH:  # the rest is a kfold-clr command line
            _check_kfold_clr(words[2:], capsys)
            return
        for flag in (word for word in words[2:] if word.startswith("--")):
            assert f'"{flag}"' in script.read_text(encoding="utf-8"), (words[1], flag)
        return
    assert words[0] in TOOLS, f"a command the docs checks do not know: {' '.join(words)}"


def _check_kfold_clr(argv, capsys):
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as stop:  # --help, --version
        assert stop.code == 0, argv
        return
    if args.command == "validate":
        config = load_config(args.config, overrides=args.set)  # every config the docs name is valid
        data = config.data.path
        if data is None or (config.base_dir / data).exists():
            assert main(argv) == 0, (argv, capsys.readouterr().err)
    elif args.command in ("init", "schema"):
        assert main(argv) == 0, (argv, capsys.readouterr().err)


@pytest.mark.slow
@pytest.mark.parametrize("page, codes", page_blocks("python"))
def test_python_blocks_run(page, codes, workdir):
    from kfold_clr.results import Results

    namespace = {"__name__": "__docs__"}
    for code in codes:
        exec(compile(code, str(page), "exec"), namespace)  # noqa: S102  (our own documentation)
    for name, value in namespace.items():  # a run the docs show finishes every fold
        if isinstance(value, Results):
            assert value.n_failed == 0 and (value.folds["status"] == "ok").all(), (name, value.folds["error"])


def test_every_benchmark_has_its_command_on_the_benchmarks_page():
    page = (ROOT / "docs" / "benchmarks.md").read_text(encoding="utf-8")
    for script in sorted((ROOT / "benchmarks").glob("bench_*.py")):
        assert f"python benchmarks/{script.name}" in page, script.name


def test_the_doctests_of_the_api_reference_pass():
    import doctest
    import importlib
    import inspect

    page = (ROOT / "docs" / "reference" / "api.md").read_text(encoding="utf-8")
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    attempted = 0
    for ident in re.findall(r"^::: (\S+)", page, re.M):
        module_name, name = ident.rsplit(".", 1)
        target = getattr(importlib.import_module(module_name), name)
        module = inspect.getmodule(target)
        for test in doctest.DocTestFinder().find(target, name, module=module, globs=dict(vars(module))):
            result = runner.run(test)
            assert result.failed == 0, ident
            attempted += result.attempted
    assert attempted >= 1
