"""The yardstick of issue 25, kept: short functions and modules, strategy behaviour asked only of the
strategy classes, type hints on every public function, and the hints shipped (PEP 561)."""

import ast
from pathlib import Path

import kfold_clr

PACKAGE = Path(kfold_clr.__file__).parent
MAX_FUNCTION_LINES = 80  # code lines of a function, its docstring left out
MAX_MODULE_LINES = 450


def _modules():
    return {path: ast.parse(path.read_text(), filename=str(path)) for path in sorted(PACKAGE.rglob("*.py"))}


def _functions(tree):
    return [node for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]


def _code_lines(function) -> int:
    body = function.body
    first = body[0]
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
        body = body[1:]
    return body[-1].end_lineno - body[0].lineno + 1 if body else 0


def test_no_function_or_module_is_too_long():
    long_functions = [f"{path.relative_to(PACKAGE)}:{function.name} ({_code_lines(function)} lines)"
                      for path, tree in _modules().items() for function in _functions(tree)
                      if _code_lines(function) > MAX_FUNCTION_LINES]
    long_modules = [f"{path.relative_to(PACKAGE)} ({lines} lines)" for path in PACKAGE.rglob("*.py")
                    if (lines := path.read_text().count("\n")) > MAX_MODULE_LINES]
    assert not long_functions and not long_modules, (long_functions, long_modules)


def test_strategy_behaviour_is_asked_only_of_the_strategy_classes():
    found = [str(path.relative_to(PACKAGE)) for path in PACKAGE.rglob("*.py")
             if "getattr(strategy" in path.read_text() and path.parent.name != "config"]
    assert not found


def _missing_hints(function) -> list:
    arguments = function.args
    named = [*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs]
    missing = [arg.arg for arg in named if arg.annotation is None and arg.arg not in ("self", "cls")]
    starred = [arg for arg in (arguments.vararg, arguments.kwarg) if arg is not None]
    missing += [f"*{arg.arg}" for arg in starred if arg.annotation is None]
    if function.returns is None and function.name != "__init__":
        missing.append("return")
    return missing


def _public_functions(tree):
    """Functions at module level and methods of module-level classes whose names are public."""
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not node.name.startswith("_"):
            yield node.name, node
        elif isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) and not item.name.startswith("_"):
                    yield f"{node.name}.{item.name}", item


def test_every_public_function_has_type_hints():
    missing = [f"{path.relative_to(PACKAGE)}:{name} {gaps}" for path, tree in _modules().items()
               if not any(part.startswith("_") and part != "__init__.py" for part in path.relative_to(PACKAGE).parts)
               for name, function in _public_functions(tree) if (gaps := _missing_hints(function))]
    assert not missing, f"{len(missing)} public functions lack hints:\n" + "\n".join(missing[:40])


def test_the_package_ships_its_hints():
    assert (PACKAGE / "py.typed").is_file()
    assert '"py.typed"' in (PACKAGE.parent / "pyproject.toml").read_text()


def test_the_yardstick_sees_a_long_function_and_a_missing_hint():
    source = "def f(a, b: int) -> int:\n" + "    x = 1\n" * (MAX_FUNCTION_LINES + 1) + "    return x\n"
    (function,) = _functions(ast.parse(source))
    assert _code_lines(function) > MAX_FUNCTION_LINES and _missing_hints(function) == ["a"]
