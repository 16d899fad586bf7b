"""Cross-validation splits: computed once with scikit-learn's splitters, saved, shared.

Every strategy trains on exactly these splits, so comparisons between
strategies are paired on (repeat, fold). The outer splits, the rows reserved for the shared
range test and a tuned strategy's inner splits all come from the same splitter factory
(`make_splitter`, `make_holdout_splitter`), shuffled by their seed.
"""

from __future__ import annotations

import dataclasses
import json
import math
import warnings
from typing import TYPE_CHECKING

import numpy as np

from kfold_clr.errors import DataError

if TYPE_CHECKING:
    import os
    from typing import BinaryIO

    from sklearn.model_selection import BaseCrossValidator, BaseShuffleSplit

    from kfold_clr.data.datasets import Dataset

#: scikit-learn's k-fold splitter for each splitter name, and its one-split (holdout) sibling.
_KFOLD = {"kfold": "KFold", "stratified": "StratifiedKFold", "group": "GroupKFold",
          "stratified_group": "StratifiedGroupKFold"}
_HOLDOUT = {"kfold": "ShuffleSplit", "stratified": "StratifiedShuffleSplit", "group": "GroupShuffleSplit",
            "stratified_group": "GroupShuffleSplit"}


@dataclasses.dataclass(frozen=True)
class Split:
    """One (repeat, fold): training and validation indices into the data set; `inner` names a
    split inside that fold's training rows (tuning: "i0of3", "i1of3", ... or "holdout<hash of the rows>")."""

    repeat: int
    fold: int
    train: np.ndarray
    val: np.ndarray
    inner: str = ""

    @property
    def key(self) -> str:
        return f"r{self.repeat}_f{self.fold}" + (f"_{self.inner}" if self.inner else "")


def steps_per_epoch(n_rows: int, batch_size: int) -> int:
    """Optimizer updates in one epoch over `n_rows` rows (the last batch may be short)."""
    return math.ceil(n_rows / batch_size)


def resolve_splitter(splitter: str, *, task: str, has_groups: bool) -> str:
    """Turn `auto` into a concrete splitter name for the task and data."""
    if splitter != "auto":
        return splitter
    if task == "classification":
        return "stratified_group" if has_groups else "stratified"
    return "group" if has_groups else "kfold"


def make_splitter(name: str, *, n_splits: int, shuffle: bool = True,
                  random_state: int | None = None) -> BaseCrossValidator:
    """scikit-learn's k-fold splitter called `name` ("kfold", "stratified", "group",
    "stratified_group"), shuffled by `random_state` when `shuffle`."""
    from sklearn import model_selection

    splitter = getattr(model_selection, _KFOLD[name])
    return splitter(n_splits=n_splits, shuffle=shuffle, random_state=random_state if shuffle else None)


def make_holdout_splitter(name: str, *, test_size: float, random_state: int) -> BaseShuffleSplit:
    """The one-split shuffle splitter of the same kind as `name`'s k-fold splitter: whole groups
    for the group kinds, stratified for "stratified", plain for "kfold"."""
    from sklearn import model_selection

    return getattr(model_selection, _HOLDOUT[name])(n_splits=1, test_size=test_size, random_state=random_state)


def split_rows(splitter: BaseCrossValidator | BaseShuffleSplit, name: str, dataset: Dataset, rows: np.ndarray) -> list:
    """`splitter`'s (train, val) positions into `rows`, stratified by the rows' classes and grouped
    by their groups as the kind `name` asks."""
    stratify = dataset.y[rows] if name in ("stratified", "stratified_group") else None
    groups = dataset.groups[rows] if "group" in name else None
    return list(splitter.split(rows, stratify, groups))


def _check_feasible(name, dataset, rows, n_splits, n_repeats, shuffle):
    n = len(rows)
    if n_splits > n:
        raise DataError(f"cv.n_splits: {n_splits} is more than the {n} samples in the data")
    if name in ("stratified", "stratified_group"):
        if dataset.task != "classification":
            raise DataError(f"cv.splitter: {name!r} needs a classification target; "
                            "use kfold or group for regression")
        counts = np.bincount(dataset.y[rows])
        smallest = int(counts[counts > 0].min())
        if smallest < n_splits:
            warnings.warn(f"cv.n_splits: {n_splits} folds but the smallest class has only "
                          f"{smallest} samples; some validation folds will lack that class",
                          UserWarning, stacklevel=3)
    if name in ("group", "stratified_group"):
        if dataset.groups is None:
            raise DataError(f"cv.splitter: {name!r} needs group labels; set data.groups "
                            "(csv column) or provide 'groups' in the npz file")
        n_groups = len(np.unique(dataset.groups[rows]))
        if n_groups < n_splits:
            raise DataError(f"cv.n_splits: {n_splits} is more than the {n_groups} groups in the data")
    if n_repeats > 1 and not shuffle:
        raise DataError(f"cv.n_repeats: {n_repeats} repeats without shuffling would repeat the "
                        "same splits; set cv.shuffle: true or n_repeats: 1")


def reserve_rows(dataset: Dataset, fraction: float, *, seed: int = 0) -> np.ndarray:
    """Rows set aside before splitting (`range_test.reserve`): sorted indices, about `fraction` of them.

    Stratified by class for classification and group-aware where groups exist (whole
    groups go to one side), with scikit-learn's shuffle splitters (`make_holdout_splitter`).
    """
    name = resolve_splitter("auto", task=dataset.task, has_groups=dataset.groups is not None)
    indices = np.arange(dataset.n_samples)
    try:
        splitter = make_holdout_splitter(name, test_size=fraction, random_state=seed)
        [(_, reserved)] = split_rows(splitter, name, dataset, indices)
    except ValueError as error:
        raise DataError(f"range_test.reserve: {fraction} cannot be set aside from "
                        f"{dataset.n_samples} samples ({error})") from None
    return np.sort(reserved)


def make_splits(dataset: Dataset, *, splitter: str = "auto", n_splits: int = 5, n_repeats: int = 1,
                shuffle: bool = True, seed: int = 0, exclude: np.ndarray | None = None) -> list[Split]:
    """All (repeat, fold) splits of `dataset`, repeat-major.

    Args:
        dataset: Dataset. Its `y` stratifies and its `groups` group the splits.
        splitter: str. One of "auto", "kfold", "stratified", "group", "stratified_group".
        n_splits: int. Folds per repeat.
        n_repeats: int. Repeats with different shuffles (seeded by `seed + repeat`).
        shuffle: bool. Shuffle before splitting.
        seed: int. Base random seed.
        exclude: array of int or None. Rows set aside (`reserve_rows`): in no split.

    Returns:
        list of Split, with indices into the whole data set.
    """
    name = resolve_splitter(splitter, task=dataset.task, has_groups=dataset.groups is not None)
    if dataset.groups is not None and "group" not in name:
        warnings.warn(f"cv.splitter: {name!r} ignores the data's groups, so one group's rows can be on both "
                      "sides of a split; use 'group', 'stratified_group' or 'auto' to keep each group in one fold",
                      UserWarning, stacklevel=2)
    rows = np.arange(dataset.n_samples)
    if exclude is not None and len(exclude):
        rows = np.setdiff1d(rows, exclude)
    _check_feasible(name, dataset, rows, n_splits, n_repeats, shuffle)
    splits = []
    for repeat in range(n_repeats):
        cv = make_splitter(name, n_splits=n_splits, shuffle=shuffle, random_state=seed + repeat)
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="The least populated class")
                folds = split_rows(cv, name, dataset, rows)
        except ValueError as error:
            raise DataError(f"cv: scikit-learn's {name} splitter refused the data: {error}") from None
        for fold, (train, val) in enumerate(folds):
            splits.append(Split(repeat, fold, np.sort(rows[train]), np.sort(rows[val])))
    return splits


def save_given_splits(file: str | os.PathLike | BinaryIO, splits: list) -> None:
    """Write (train, val) index pairs (to a path or binary file) as the .npz that
    `cv: {splitter: given, path: ...}` reads."""
    arrays = {}
    for index, (train, val) in enumerate(splits):
        arrays[f"train_{index}"] = np.asarray(train, dtype=np.int64)
        arrays[f"val_{index}"] = np.asarray(val, dtype=np.int64)
    np.savez(file, **arrays)


def load_given_splits(path: str | os.PathLike, n_samples: int) -> list[Split]:
    """The splits of a `given` splits file, checked: indices of existing rows, a split's training
    and validation rows disjoint and both non-empty. Repeat 0, folds in the file's order."""
    try:
        with np.load(path, allow_pickle=False) as stored:
            arrays = {name: stored[name] for name in stored.files}
    except (OSError, ValueError) as error:
        raise DataError(f"cv.path: {str(path)!r} cannot be read as an .npz of splits ({error})") from None
    count = sum(1 for name in arrays if name.startswith("val_"))
    if count < 1 or any(f"train_{i}" not in arrays or f"val_{i}" not in arrays for i in range(count)):
        raise DataError(f"cv.path: {str(path)!r} must hold arrays train_0, val_0, train_1, val_1, ...")
    splits = []
    for fold in range(count):
        train, val = (np.asarray(arrays[f"{part}_{fold}"]) for part in ("train", "val"))
        for part, rows in (("train", train), ("val", val)):
            if rows.ndim != 1 or not np.issubdtype(rows.dtype, np.integer) or not len(rows):
                raise DataError(f"cv.path: {part}_{fold} must be a non-empty list of row numbers")
            if rows.min() < 0 or rows.max() >= n_samples:
                raise DataError(f"cv.path: {part}_{fold} holds row {int(rows.max())}, but the data has "
                                f"{n_samples} rows")
        if np.intersect1d(train, val).size:
            raise DataError(f"cv.path: split {fold} trains on some of its validation rows")
        splits.append(Split(0, fold, np.unique(train), np.unique(val)))
    return splits


def splits_to_json(splits: list[Split], *, splitter: str, reserved: np.ndarray | None = None) -> str:
    """`splits.json`: the splitter's name, the reserved rows and each split's validation rows."""
    payload = {
        "splitter": splitter,
        "reserved": [] if reserved is None else np.asarray(reserved).tolist(),
        "splits": [{"repeat": s.repeat, "fold": s.fold, "val": s.val.tolist()} for s in splits],
    }
    return json.dumps(payload)


def splits_from_json(text: str, n_samples: int) -> list[Split]:
    """Rebuild splits from `splits.json` (validation indices; training is the rest, less the reserved rows)."""
    payload = json.loads(text)
    everything = np.setdiff1d(np.arange(n_samples), np.asarray(payload.get("reserved", []), dtype=int))
    result = []
    for item in payload["splits"]:
        val = np.asarray(item["val"], dtype=int)
        result.append(Split(item["repeat"], item["fold"], np.setdiff1d(everything, val), val))
    return result
