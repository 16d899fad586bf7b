"""Argument checks and import-path helpers shared by the schedule classes."""

from __future__ import annotations

import importlib
import math
import numbers
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable, Collection

_Choice = TypeVar("_Choice")


def check_number(name: str, value: Any, *, low: float | None = None, high: float | None = None,
                 low_open: bool = False, high_open: bool = False) -> float:
    """Returns `value` as a float after checking it is a finite real in the range.

    Raises:
        ValueError: naming the argument, the rule and the value received.
    """
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(value)
    ):
        raise ValueError(
            f"Argument `{name}` must be a finite number. Received: {name}={value!r}"
        )
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        if low is not None and high is not None:
            rule = f"in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        elif low is not None:
            rule = f"{'>' if low_open else '>='} {low}"
        else:
            rule = f"{'<' if high_open else '<='} {high}"
        raise ValueError(f"Argument `{name}` must be {rule}. Received: {name}={value!r}")
    return float(value)


def check_int(name: str, value: Any, *, low: int) -> int:
    """Returns `value` as an int after checking it is an integer >= `low`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(
            f"Argument `{name}` must be an integer >= {low}. Received: {name}={value!r}"
        )
    if value < low:
        raise ValueError(f"Argument `{name}` must be >= {low}. Received: {name}={value!r}")
    return int(value)


def check_greater(name: str, value: float, other_name: str, other: float) -> None:
    """Checks `value > other` for two checked numbers, e.g. `max_lr` > `min_lr`."""
    if not value > other:
        raise ValueError(
            f"Argument `{name}` must be > `{other_name}`. "
            f"Received: {other_name}={other!r}, {name}={value!r}"
        )


def check_choice(name: str, value: _Choice, choices: Collection[Any]) -> _Choice:
    """Returns `value` after checking it is one of `choices`."""
    if value not in choices:
        allowed = ", ".join(repr(c) for c in choices)
        raise ValueError(
            f"Argument `{name}` must be one of {allowed}. Received: {name}={value!r}"
        )
    return value


def resolve_scale_fn(spec: str | Callable[..., Any]) -> Callable[..., Any]:
    """Turns a `"package.module:function"` string into the callable it names.

    A callable is returned unchanged, so the function accepts what a schedule's
    `scale_fn` argument accepts. The part after the colon may be a dotted
    attribute path (`"package.module:Class.method"`).

    Args:
        spec: String or callable. The import path of an amplitude scaling function,
            as written in a YAML config, or the function itself.

    Returns:
        The callable.

    Raises:
        ValueError: if `spec` is not of the form `"module:function"`, the module
            cannot be imported, the attribute does not exist or is not callable.

    Example:

    >>> fn = resolve_scale_fn("math:sqrt")
    >>> fn(4.0)
    2.0
    """
    if callable(spec):
        return spec
    if not isinstance(spec, str) or spec.count(":") != 1:
        raise ValueError(
            "Argument `scale_fn` must be a callable or an import path of the form "
            f"'package.module:function'. Received: scale_fn={spec!r}"
        )
    module_name, attr_path = spec.split(":")
    if not module_name or not attr_path:
        raise ValueError(
            "Argument `scale_fn` must be an import path of the form "
            f"'package.module:function'. Received: scale_fn={spec!r}"
        )
    try:
        obj = importlib.import_module(module_name)
    except Exception as exc:  # ImportError, or an error raised while importing.
        raise ValueError(
            f"Argument `scale_fn` must name an importable module; importing "
            f"{module_name!r} failed ({type(exc).__name__}: {exc}). "
            f"Received: scale_fn={spec!r}"
        ) from exc
    for part in attr_path.split("."):
        if not hasattr(obj, part):
            raise ValueError(
                f"Argument `scale_fn` must name an attribute of module {module_name!r}; "
                f"{attr_path!r} was not found. Received: scale_fn={spec!r}"
            )
        obj = getattr(obj, part)
    if not callable(obj):
        raise ValueError(
            f"Argument `scale_fn` must name a callable; {spec!r} is a "
            f"{type(obj).__name__}. Received: scale_fn={spec!r}"
        )
    return obj


def import_path_of(fn: str | Callable[..., Any], *, name: str = "scale_fn") -> str:
    """Returns the `"module:qualname"` path under which `fn` can be imported again.

    Raises:
        ValueError: for lambdas, local functions, functions defined in `__main__`
            and any object that the path would not resolve back to.
    """
    if isinstance(fn, str):
        resolve_scale_fn(fn)
        return fn
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", None)
    hint = (
        "Define the function at the top level of an importable module (not in "
        "`__main__`, not a lambda or a nested function), or pass its import path "
        "'package.module:function'."
    )
    if not module or not qualname or "<" in qualname or module == "__main__":
        raise ValueError(
            f"Argument `{name}` cannot be serialized: {fn!r} has no import path. "
            f"{hint} Received: {name}={fn!r}"
        )
    path = f"{module}:{qualname}"
    try:
        resolved = resolve_scale_fn(path)
    except ValueError:
        resolved = None
    if resolved is not fn:
        raise ValueError(
            f"Argument `{name}` cannot be serialized: its path {path!r} does not "
            f"import back to the same function. {hint} Received: {name}={fn!r}"
        )
    return path
