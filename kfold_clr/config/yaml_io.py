"""Reading and writing config YAML, safely.

Owns the loader (a SafeLoader subclass that refuses duplicate keys and reads
`1e-5` as a float, as YAML 1.2 does), `read_yaml` and `parse_yaml` with their
one-line errors, the size guard `check_size` (MAX_DEPTH levels, MAX_VALUES
values once aliases are expanded) and `dump_yaml` for writing a resolved config.
"""

import pathlib
import re
from typing import Any, Union

import yaml

from kfold_clr.errors import ConfigError

MAX_DEPTH = 32  # nesting levels of a config; real ones use 5
MAX_VALUES = 100_000  # values of a config once YAML aliases are expanded; real ones hold a few hundred


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads `1e-5` (no dot) as a float, as YAML 1.2 does."""


def _construct_mapping_without_duplicates(loader, node, deep=False):
    """A mapping whose explicit keys are unique; `<<: *base` merge keys work (explicit keys win)."""
    seen = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=deep)
        if isinstance(key, str) and key in seen:
            mark = key_node.start_mark
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (the second would silently replace the first)", mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping_without_duplicates)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d[\d_]*)?(?:\.\d*)?[eE][-+]?\d+$"),
    list("-+0123456789."),
)


def read_yaml(path: Union[str, pathlib.Path]) -> dict:
    """Read an experiment YAML file with a safe loader; one-line errors."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: cannot be read ({error.__class__.__name__}: {error})") from None
    return parse_yaml(text, source=str(path))


def parse_yaml(text: str, *, source: str = "<string>") -> dict:
    try:
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ConfigError(f"{source}: invalid YAML{where}: {problem}") from None
    except RecursionError:
        raise ConfigError(f"{source}: nested more than {MAX_DEPTH} levels deep; "
                          "an experiment needs about 5") from None
    check_size(data, source=source)
    if data is None:
        raise ConfigError(f"{source}: the file is empty; an experiment needs at least "
                          "`name`, `data` and `strategies`")
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of sections, "
                          f"got {type(data).__name__}")
    return data


def check_size(data: Any, *, source: str = "<config>") -> None:
    """Refuse a config nested more than MAX_DEPTH levels or holding more than MAX_VALUES values
    once YAML aliases are expanded (a "billion laughs" file), before anything copies it."""
    sizes = {}  # id -> expanded size of a container seen before (aliases share one object)

    def size(node: Any, depth: int) -> int:
        if not isinstance(node, (dict, list)):
            return 1
        if depth > MAX_DEPTH:
            raise ConfigError(f"{source}: nested more than {MAX_DEPTH} levels deep; an experiment needs about 5")
        if id(node) not in sizes:
            sizes[id(node)] = None  # a cycle (a YAML alias inside its own anchor) counts as too deep
            children = node.values() if isinstance(node, dict) else node
            sizes[id(node)] = 1 + sum(size(child, depth + 1) for child in children)
        elif sizes[id(node)] is None:
            raise ConfigError(f"{source}: a YAML alias refers to the mapping or list that contains it")
        total = sizes[id(node)]
        if total > MAX_VALUES:
            raise ConfigError(f"{source}: expands to more than {MAX_VALUES:,} values through YAML aliases "
                              "(a 'billion laughs' file?); an experiment holds a few hundred")
        return total

    size(data, 0)


def dump_yaml(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=100)
