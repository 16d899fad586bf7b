"""Validation of plain data against the schema, with pydantic's errors made one line.

Owns `validate_config` and the formatting behind it: each pydantic error becomes
a line naming the key path, the value received and what is allowed (the keys
a section accepts, the options of a literal, the bounds of a number), and a
`_KeyError` from a cross-field rule is reported at its own key.
"""

import re

from pydantic import BaseModel, ValidationError

from kfold_clr.config.base import _key_text, _KeyError
from kfold_clr.config.schema import ExperimentConfig
from kfold_clr.config.strategies import SCHEDULES, STRATEGY_CLASSES
from kfold_clr.errors import ConfigError


def _describe_allowed(error) -> str:
    kind, ctx = error["type"], error.get("ctx") or {}
    if kind == "literal_error":
        options = re.findall(r"'([^']*)'|(\b\w+\b)", ctx.get("expected", ""))
        names = [a or b for a, b in options if (a or b) not in ("or",)]
        return "is not one of " + ", ".join(names)
    if kind == "union_tag_invalid":
        return "is not a known schedule; use one of " + ", ".join(SCHEDULES)
    if kind == "union_tag_not_found":
        return "has no `schedule` key; add one of " + ", ".join(SCHEDULES)
    bounds = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}
    if kind in bounds:
        limit = next(iter(ctx.values()))
        return f"must be {bounds[kind]} {limit}"
    if kind == "too_short":
        return f"must have at least {ctx.get('min_length', 1)} entry"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return "must be a mapping (key: value entries)"
    message = error["msg"]
    if message.startswith("Input should be "):
        message = "must be " + message[len("Input should be "):]
    return message


def _allowed_keys(model_cls, loc) -> list[str]:
    """Field names of the section that `loc` (up to its last element) points into."""
    current = model_cls
    for part in loc[:-1]:
        fields = getattr(current, "model_fields", None)
        if fields is None:
            return []
        if part in fields:
            current = _section_class(fields[part].annotation)
        elif part in SCHEDULES:
            current = STRATEGY_CLASSES[part]
    fields = getattr(current, "model_fields", None)
    return list(fields) if fields else []


def _section_class(annotation):
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _section_class(arg)
        if found is not None:
            return found
    return None


def _format_error(error) -> str:
    loc = [_key_text(part) for part in error["loc"]]
    # Drop the discriminator tag pydantic inserts after a strategy's name.
    if len(loc) >= 3 and loc[0] == "strategies" and loc[2] in SCHEDULES:
        loc = loc[:2] + loc[3:]
    cause = (error.get("ctx") or {}).get("error")
    if isinstance(cause, _KeyError):
        key = cause.key if cause.absolute else ".".join([*loc, cause.key]) if loc else cause.key
        return f"{key}: {cause.value!r} must be {cause.allowed}"
    path = ".".join(loc) or "<top level>"
    if error["type"] == "extra_forbidden":
        allowed = _allowed_keys(ExperimentConfig, error["loc"])
        hint = f"; allowed keys are {', '.join(allowed)}" if allowed else ""
        return f"{path}: unknown key{hint}"
    if error["type"] == "missing":
        return f"{path}: required key is missing"
    value = error.get("input")
    if error["type"] == "union_tag_invalid":
        value = value.get("schedule") if isinstance(value, dict) else value
    return f"{path}: {value!r} {_describe_allowed(error)}"


def validate_config(data: dict) -> ExperimentConfig:
    """Validate plain data into an ExperimentConfig, or raise a one-line ConfigError."""
    if not isinstance(data, dict):
        raise ConfigError(f"<top level>: {type(data).__name__} must be a mapping of sections")
    bad_keys = [key for key in data if not isinstance(key, str)]
    if bad_keys:
        raise ConfigError(f"<top level>: key {bad_keys[0]!r} must be a string")
    try:
        return ExperimentConfig.model_validate(data)
    except ValidationError as error:
        errors = error.errors()
        message = _format_error(errors[0])
        more = f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})" \
            if len(errors) > 1 else ""
        one_line = (message + more).replace("\r", "\\r").replace("\n", "\\n")
        raise ConfigError(one_line) from None
    except RecursionError:
        raise ConfigError("<top level>: the config is nested too deeply") from None
