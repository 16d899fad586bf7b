"""The ground every config section stands on: the strict frozen section, the cross-field
error that names its key, safe names and path expansion."""

import os
import pathlib
import re
from typing import Union

from pydantic import BaseModel, ConfigDict

SKLEARN_DATASETS = ("digits", "iris", "wine", "breast_cancer", "diabetes")
SAFE_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,99}$")
RESERVED_NAMES = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(10)), *(f"lpt{i}" for i in range(10))}
SAFE_NAME_RULE = ("a safe file name: up to 100 letters, digits, '_', '-' or '.', not starting or ending "
                  "with '.', without '..', and not a reserved device name (CON, NUL, COM1, ...)")
SYNTHETIC_DATASETS = ("classification", "regression")

# Generous but finite limits on what sizes work, so that a typo ("n_repeats: 1000000", "lr: 1e308")
# is refused at load with its key, instead of a run that never ends or cannot train.
MAX_LR = 1e3  # learning rates and LR bounds
MAX_EPOCHS = 100_000  # epochs, and schedule lengths in epochs (step sizes, cycles, patience)
MAX_ITERATIONS = 100_000_000  # schedule lengths in updates (step sizes, range-test sweeps)
MAX_REPEATS = 1000  # cv.n_repeats
MAX_SPLITS = 1000  # cv.n_splits and tune.n_splits
MAX_COUNT = 10_000  # other counts: snapshots kept, folds per fused model, workers, threads
IMPORT_PATH = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


def is_safe_name(name: object) -> bool:
    """Whether `name` can be a file or folder name on every system (see SAFE_NAME_RULE)."""
    return (isinstance(name, str) and bool(SAFE_NAME.match(name)) and ".." not in name
            and not name.endswith(".") and name.split(".")[0].lower() not in RESERVED_NAMES)


def expand_path(text: str, *, key: str) -> str:
    """`~` and environment variables expanded, as a shell would; an unset variable is an error."""
    expanded = os.path.expanduser(os.path.expandvars(text))
    unset = re.search(r"\$(\{[A-Za-z_]\w*\}|[A-Za-z_]\w*)", expanded)
    if unset:
        raise _KeyError(key, text, f"a path whose environment variables are set ({unset.group(0)} is not)",
                        absolute=True)
    return expanded


# ----------------------------------------------------------------------------- cross-field errors
class _KeyError(ValueError):
    """A cross-field rule failed: carries the key, value and what is allowed."""

    def __init__(self, key: str, value: object, allowed: str, *, absolute: bool = False) -> None:
        super().__init__(f"{key}: {value!r} must be {allowed}")
        self.key, self.value, self.allowed, self.absolute = key, value, allowed, absolute


def _key_text(part: object) -> str:
    """A key as it reads in a path: plain when it is a simple name, quoted otherwise."""
    text = str(part)
    return text if re.fullmatch(r"[\w-]+", text) else repr(text)


# ----------------------------------------------------------------------------- sections
class _Section(BaseModel):
    """A strict, frozen config section: unknown keys and wrong types are errors, and a loaded
    config never changes (a resolved copy is made with `model_copy(update=...)`)."""

    model_config = ConfigDict(extra="forbid", strict=True, validate_default=True, allow_inf_nan=False,
                              frozen=True)


def resolve_path(path: Union[str, pathlib.Path], base_dir: Union[str, pathlib.Path]) -> pathlib.Path:
    """A path the user gave (`data.path`, `data.table`, `model.weights`): as given when absolute or
    found from the working directory, else beside the config when there, else as given."""
    candidate = pathlib.Path(os.path.expandvars(path)).expanduser()
    if candidate.is_absolute() or candidate.exists():
        return candidate
    beside_config = pathlib.Path(base_dir) / candidate
    return beside_config if beside_config.exists() else candidate
