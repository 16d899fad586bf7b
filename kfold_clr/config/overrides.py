"""Command-line overrides of a config: `--set key.path=value`.

Owns `apply_overrides`, which copies the plain config data and sets each key
path to its value, read as a YAML scalar with the config loader; missing
sections are created, and setting a key inside a value that is not a section
is an error.
"""

import copy
from collections.abc import Iterable
from typing import Optional

import yaml

from kfold_clr.config.yaml_io import _Loader
from kfold_clr.errors import ConfigError


def apply_overrides(data: dict, overrides: Optional[Iterable[str]]) -> dict:
    """Apply `key.path=value` overrides (values parsed as YAML scalars)."""
    data = copy.deepcopy(data)
    for item in overrides or ():
        if "=" not in item:
            raise ConfigError(f"--set: {item!r} must look like key.path=value")
        key, raw = item.split("=", 1)
        parts = [part for part in key.strip().split(".") if part]
        if not parts:
            raise ConfigError(f"--set: {item!r} has an empty key path")
        try:
            value = yaml.load(raw, Loader=_Loader) if raw.strip() else None  # noqa: S506
        except yaml.YAMLError:
            value = raw
        node = data
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part) if isinstance(node, dict) else None
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"--set: {'.'.join(parts[:depth + 1])} is "
                                  f"{child!r}, not a section; cannot set {key}")
            node = child
        node[parts[-1]] = value
    return data
