"""Fingerprints of the user's code behind a run: the files a factory imports, a notebook function's globals.

A saved fold is reused only when the code that built its model is the same. For
an import path (``model.factory``, ``scale_fn``) that is the source of its module
and of every module it imports, transitively, that lives outside the standard
library and site-packages (the user's helpers). For a function defined in a
notebook it is its source, its default arguments, and the globals and closure
variables it reads: a value of a simple type by value, a function by its own
fingerprint, a module by its files. Each piece has a label that names it in
the message of a refused resume ("code file helpers.py", "global UNITS read by
make_model").

Example:

```python
code_files("mypkg.models:make_model")
# {'code file /home/me/mypkg/models.py': '3f2a...', 'code file /home/me/mypkg/blocks.py': '9c01...'}
```
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib
import importlib.util
import inspect
import os
import site
import sys
import sysconfig
import types
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Union

if TYPE_CHECKING:
    import keras

    NotebookModel = Union[Callable[..., Any], keras.Model]

MAX_MODULES = 200  # a factory that reaches more local modules is fingerprinted by the first ones
_SIMPLE = (type(None), bool, int, float, complex, str, bytes)


def _digest(data: object) -> str:
    return hashlib.sha256(data if isinstance(data, bytes) else str(data).encode()).hexdigest()[:16]


@functools.lru_cache(maxsize=1)
def _library_roots() -> tuple[str, ...]:
    """Folders whose modules are libraries (tracked by version), not the user's code."""
    paths = sysconfig.get_paths()
    roots = {paths.get(key) for key in ("stdlib", "platstdlib", "purelib", "platlib")}
    roots.update(getattr(site, "getsitepackages", lambda: [])())
    roots.add(getattr(site, "getusersitepackages", lambda: None)())
    roots.add(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # kfold_clr itself: its version is tracked
    return tuple(os.path.realpath(root) + os.sep for root in roots if root)


def _local_file(module: object) -> str | None:
    """The source file of `module` if it is the user's own (.py outside the libraries), else None."""
    path = getattr(module, "__file__", None)
    if not path or not path.endswith(".py"):
        return None
    path = os.path.realpath(path)
    return None if path.startswith(_library_roots()) else path


def _imported_names(tree, module) -> set:
    """Absolute names of the modules (and `from m import x` candidates) a module's source imports."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                names.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
        elif isinstance(node, ast.ImportFrom):
            try:
                base = importlib.util.resolve_name("." * node.level + (node.module or ""),
                                                   getattr(module, "__package__", None) or "")
            except (ImportError, ValueError):
                continue
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def _in_a_library(name) -> bool:
    """Whether `name` lies in a built-in module or an imported library package (nothing to look up)."""
    top = name.partition(".")[0]
    if top in sys.builtin_module_names:
        return True
    path = getattr(sys.modules.get(top), "__file__", None)
    return path is not None and os.path.realpath(path).startswith(_library_roots())


def _find_module(name):
    """The module called `name`, imported if needed (a lazy import inside a function); None if none."""
    if name in sys.modules:
        return sys.modules[name]
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError, AttributeError):
        return None
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return None
    return types.SimpleNamespace(__file__=spec.origin, __package__=spec.parent if not spec.submodule_search_locations
                                 else name, __name__=name)


def module_files(*modules: types.ModuleType | types.SimpleNamespace) -> dict[str, str]:
    """{'code file PATH': hash} of `modules` and the local modules they import, transitively."""
    found, queue, seen = {}, list(modules), set()
    while queue and len(found) < MAX_MODULES:
        module = queue.pop(0)
        path = _local_file(module)
        if path is None or path in seen:
            continue
        seen.add(path)
        try:
            with open(path, "rb") as stream:
                source = stream.read()
        except OSError:
            continue
        found[f"code file {path}"] = _digest(source)
        try:
            tree = ast.parse(source)
        except (SyntaxError, ValueError):
            continue
        names = [name for name in sorted(_imported_names(tree, module)) if not _in_a_library(name)]
        queue += [m for m in map(_find_module, names) if m is not None]
    return found


def code_files(import_path: str) -> dict[str, str]:
    """The local source files behind `import_path` ("pkg.module:name"), by label; {} when it cannot be imported."""
    module_name = import_path.partition(":")[0]
    try:
        module = importlib.import_module(module_name)
    except Exception:  # noqa: BLE001 - `prepare` reports a factory that cannot be imported
        return {}
    return module_files(module)


def function_parts(function: Callable[..., Any], *, _seen: set[int] | None = None) -> dict[str, str]:
    """{label: hash} of a notebook function: its source, defaults, and the globals and closure
    variables it reads (simple values by value, functions and classes by source, modules by files)."""
    _seen = set() if _seen is None else _seen
    if id(function) in _seen:
        return {}
    _seen.add(id(function))
    name = getattr(function, "__qualname__", repr(function))
    try:
        source = inspect.getsource(function)
    except (OSError, TypeError):
        code = getattr(function, "__code__", None)
        source = repr((code.co_code, code.co_consts)) if code is not None else repr(function)
    parts = {f"source of {name}": _digest(source),
             f"default arguments of {name}": _value_digest((getattr(function, "__defaults__", None),
                                                             getattr(function, "__kwdefaults__", None)))}
    code = getattr(function, "__code__", None)
    if code is None:
        return parts
    namespace = getattr(function, "__globals__", {})
    for global_name in sorted(_global_names(code)):
        if global_name in namespace:
            parts.update(_value_parts(namespace[global_name], f"global {global_name} read by {name}", _seen))
    for variable, cell in zip(code.co_freevars, getattr(function, "__closure__", None) or ()):
        try:
            value = cell.cell_contents
        except ValueError:  # an empty cell
            continue
        parts.update(_value_parts(value, f"closure variable {variable} of {name}", _seen))
    return parts


def _global_names(code) -> set:
    """The global names a code object and the functions nested in it read."""
    names = set(code.co_names)
    for constant in code.co_consts:
        if isinstance(constant, types.CodeType):
            names |= _global_names(constant)
    return names


def _value_parts(value, label, seen) -> dict:
    if isinstance(value, types.ModuleType):
        return module_files(value)
    if isinstance(value, (types.FunctionType, types.MethodType)):
        return function_parts(value, _seen=seen)
    if isinstance(value, type):
        local = _local_file(sys.modules.get(value.__module__)) or value.__module__ == "__main__"
        if not local:
            return {}
        try:
            return {label: _digest(inspect.getsource(value))}
        except (OSError, TypeError):
            return {label: _digest(value.__qualname__)}
    digest = _value_digest(value)
    return {label: digest} if digest is not None else {}


def _value_digest(value):
    """A hash of a simple value (numbers, strings, containers of them, numpy arrays); None for others."""
    if isinstance(value, _SIMPLE):
        return _digest(repr(value))
    if isinstance(value, (tuple, list, frozenset, set)):
        items = [_value_digest(item) for item in (sorted(value, key=repr) if isinstance(value, (set, frozenset))
                                                  else value)]
        return None if None in items else _digest(repr((type(value).__name__, items)))
    if isinstance(value, dict):
        items = [(_value_digest(key), _value_digest(item)) for key, item in value.items()]
        return None if any(None in pair for pair in items) else _digest(repr(sorted(items)))
    if type(value).__module__ == "numpy" and hasattr(value, "tobytes"):
        return _digest(repr((value.dtype.str, value.shape)).encode() + value.tobytes())
    return None


# ----------------------------------------------------------------------------- notebook models
NOTEBOOK_FACTORY = "kfold_clr.api:notebook_model"  # the `model.factory` of a model `cross_validate` was given
_NOTEBOOK_MODELS = {}  # key -> a model function or a Keras model to clone (this process only)


def _model_parts(model: NotebookModel) -> dict[str, str]:
    """What identifies a notebook model across runs, by label: a Keras model's architecture, or a
    function's source, defaults, and the globals and closure variables it reads (`function_parts`)."""
    import keras

    if isinstance(model, keras.Model):
        return {"the Keras model's architecture": _digest(model.to_json())}
    parts = function_parts(model)
    if not inspect.isfunction(model):  # a callable object: its class's code too
        parts.update(function_parts(type(model).__call__))
    return parts


def register_notebook_model(model: NotebookModel) -> str:
    """Keep `model` (a function or a Keras model) for this process; its key is made of its parts."""
    key = hashlib.sha256(repr(sorted(_model_parts(model).items())).encode()).hexdigest()[:16]
    _NOTEBOOK_MODELS[key] = model
    return key


def notebook_model(key: str) -> NotebookModel | None:
    """The notebook model registered under `key` in this process, or None."""
    return _NOTEBOOK_MODELS.get(key)


def notebook_parts(key: str) -> dict[str, str]:
    """The labelled parts (`_model_parts`) of the notebook model registered under `key` ({} if none)."""
    model = _NOTEBOOK_MODELS.get(key)
    return {} if model is None else _model_parts(model)
