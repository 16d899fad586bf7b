"""The package's modules import one another without cycles (top-level and function-level imports
alike), so every module can be read, and imported, before the ones that use it."""

import ast
from pathlib import Path

import kfold_clr

PACKAGE = Path(kfold_clr.__file__).parent


def module_names() -> dict:
    """Every module of kfold_clr by dotted name (a package by its own name, for its __init__)."""
    names = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = ["kfold_clr", *path.relative_to(PACKAGE).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def _imported(node, module: str, is_package: bool) -> list:
    """Dotted names an import statement reaches (relative imports resolved against `module`)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        anchor = module.split(".") if is_package else module.split(".")[:-1]
        anchor = anchor[:len(anchor) - (node.level - 1)]
        base = ".".join([*anchor, base] if base else anchor)
    return [base] + [f"{base}.{alias.name}" for alias in node.names]


def _is_type_checking(node) -> bool:
    test = node.test if isinstance(node, ast.If) else None
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _run_time_imports(tree) -> list:
    """Every import statement that runs (at module level or in a function), leaving out the
    `if TYPE_CHECKING:` blocks that only editors and type checkers read."""
    found, pending = [], [tree]
    while pending:
        node = pending.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        children = ast.iter_child_nodes(node)
        if _is_type_checking(node):
            children = node.orelse
        pending.extend(children)
    return found


def import_graph() -> dict:
    """kfold_clr module -> the kfold_clr modules it imports. `from kfold_clr.x import y` imports
    kfold_clr.x (and kfold_clr.x.y when that is a module); importing kfold_clr.x.y does not count
    as importing the package kfold_clr.x's __init__ twice over: only named modules are edges."""
    modules = module_names()
    graph = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        graph[name] = {target for node in _run_time_imports(tree)
                       for target in _imported(node, name, path.name == "__init__.py")
                       if target in modules and target != name}
    return graph


def find_cycle(graph: dict):
    """One cycle as a list of modules (first repeated at the end), or None."""
    colour = dict.fromkeys(graph, 0)  # 0 unseen, 1 on the current path, 2 done
    stack = []

    def visit(node):
        colour[node] = 1
        stack.append(node)
        for target in sorted(graph[node]):
            if colour[target] == 1:
                return stack[stack.index(target):] + [target]
            if colour[target] == 0:
                found = visit(target)
                if found:
                    return found
        stack.pop()
        colour[node] = 2
        return None

    for start in sorted(graph):
        if colour[start] == 0:
            found = visit(start)
            if found:
                return found
    return None


def test_find_cycle_reports_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_relative_and_package_imports_are_edges():
    tree = ast.parse("from . import costs\nfrom ..plots import experiment\nfrom kfold_clr.range_test import x\n")
    found = [_imported(node, "kfold_clr.analysis.tables", False) for node in tree.body]
    assert "kfold_clr.analysis.costs" in found[0]
    assert "kfold_clr.plots.experiment" in found[1]
    assert "kfold_clr.range_test" in found[2]


def test_the_package_has_no_import_cycles():
    graph = import_graph()
    assert graph["kfold_clr.analysis.tables"]  # the parser sees imports at all
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_layers_contract_names_every_folder_and_module_at_the_top():
    """Nothing at the top of the package escapes the import-linter contract in pyproject.toml, and at
    most 8 modules are left there (the rest live in the folders that spell the pipeline)."""
    import tomllib

    config = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())
    (contract,) = config["tool"]["importlinter"]["contracts"]
    layers = {layer.removeprefix("kfold_clr.") for layer in contract["layers"]}
    top = {path.stem if path.is_file() else path.name for path in PACKAGE.iterdir()
           if (path.suffix == ".py" or (path / "__init__.py").exists()) and path.stem not in ("__init__", "__main__")}
    assert top == layers
    assert len(list(PACKAGE.glob("*.py"))) <= 8


def test_imports_point_down_the_layers():
    """`lint-imports` (import-linter) keeps the contract: a module imports only from its own layer and
    the ones below it."""
    import shutil
    import subprocess

    command = shutil.which("lint-imports")
    assert command, "import-linter is in the test extra"
    completed = subprocess.run([command, "--no-cache"], cwd=PACKAGE.parent, capture_output=True, text=True,
                               check=False)
    assert completed.returncode == 0, completed.stdout[-2000:]
