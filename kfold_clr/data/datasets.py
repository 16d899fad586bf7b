"""Data sets: load them from the sources the YAML names, check them, preprocess per fold.

Sources: scikit-learn's bundled sets, generated ones, tables (csv, parquet: one
reader of DataFrames serves both), npz arrays, and folders of images (class
folders, or a table of labels; decoded once into a memory-mapped cache, see
:mod:`kfold_clr.data.images`).

Preprocessing (feature scaling, target scaling for regression, image reshape)
is fitted on a fold's training split only: :class:`FoldPreprocessor` (images:
:func:`kfold_clr.data.images.streaming.image_fold`, per channel and streamed).
"""

from __future__ import annotations

import dataclasses
import hashlib
import pathlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Optional

import numpy as np

from kfold_clr.config.base import resolve_path as _resolve_path  # noqa: F401 (preflight imports it)
from kfold_clr.errors import DataError
from kfold_clr.storage.npzfile import load_npz

if TYPE_CHECKING:
    from kfold_clr.config import DataConfig


@dataclasses.dataclass
class Dataset:
    """Features, target and optional groups, with what the task needs to know.

    Attributes:
        x: float32 array (n_samples, n_features), or for an image folder the read-only,
            memory-mapped uint8 pixels (n_samples, height, width, channels) of its cache.
        y: int array of class indices (classification) or float32 (regression).
        groups: optional array (n_samples,) of group labels.
        task: "classification" or "regression".
        n_outputs: number of classes, or 1 for regression.
        class_names: original class labels, in index order (classification).
        description: where it came from, for the report.
        source_digest: a hash of the files read where the arrays alone may not show
            every change of them (images: the cache key, of their names and bytes), or None.
        files: the image files of the rows, relative to the image folder (images), or None.
    """

    x: np.ndarray
    y: np.ndarray
    groups: Optional[np.ndarray]
    task: str
    n_outputs: int
    class_names: Optional[list] = None
    description: str = ""
    source_digest: Optional[str] = dataclasses.field(default=None, repr=False, compare=False)
    files: Optional[list] = dataclasses.field(default=None, repr=False, compare=False)
    _content_hash: Optional[str] = dataclasses.field(default=None, repr=False, compare=False)

    @property
    def n_samples(self) -> int:
        return len(self.x)

    def content_hash(self) -> str:
        """A hash of features, targets, groups and the source files' digest: results of
        other data are never reused.

        Computed once (a data set is not changed after loading). The pixels of an image cache
        are not read: its key (`source_digest`) already hashes the images' bytes.
        """
        if self._content_hash is not None:
            return self._content_hash
        digest = hashlib.sha256()
        for array in (self.x, self.y):
            digest.update(str(array.shape).encode())
            if not isinstance(array, np.memmap):
                digest.update(np.ascontiguousarray(array).tobytes())
        if self.groups is not None:
            digest.update("\x00".join(map(str, self.groups.tolist())).encode())
        if self.source_digest is not None:
            digest.update(self.source_digest.encode())
        self._content_hash = digest.hexdigest()[:16]
        return self._content_hash


# ----------------------------------------------------------------------------- sources
@dataclasses.dataclass
class _Loaded:
    """What a source reader returns; `columns`, `first_row` and `row_word` locate bad values,
    `digest` is the `Dataset.source_digest`, `files` the image files (images)."""

    x: object
    y: object
    groups: object
    task: Optional[str]
    description: str
    columns: Optional[list] = None
    first_row: int = 0
    row_word: str = "row"
    digest: Optional[str] = None
    files: Optional[list] = None


def _load_sklearn(cfg):
    from sklearn import datasets

    loaders = {
        "digits": datasets.load_digits, "iris": datasets.load_iris, "wine": datasets.load_wine,
        "breast_cancer": datasets.load_breast_cancer, "diabetes": datasets.load_diabetes,
    }
    bunch = loaders[cfg.name]()
    task = "regression" if cfg.name == "diabetes" else "classification"
    return _Loaded(bunch.data, bunch.target, None, task, f"scikit-learn {cfg.name}")


def _load_synthetic(cfg, seed):
    from sklearn import datasets

    from kfold_clr.data.memory import check_synthetic_size

    maker = datasets.make_classification if cfg.name == "classification" else datasets.make_regression
    params = {"n_samples": 200, "random_state": seed, **cfg.params}
    check_synthetic_size(params, name=cfg.name)
    try:
        x, y = maker(**params)
    except (TypeError, ValueError) as error:
        raise DataError(f"data.params: {cfg.params!r} rejected by make_{cfg.name}: {error}") from None
    task = "classification" if cfg.name == "classification" else "regression"
    return _Loaded(x, y, None, task, f"make_{cfg.name}({', '.join(f'{k}={v}' for k, v in params.items())})")


def data_file(cfg: DataConfig, *, base_dir: str | pathlib.Path = ".") -> pathlib.Path | None:
    """The file or folder a `data:` section reads (resolved as the loader resolves it), or None."""
    return _resolve_path(cfg.path, base_dir) if cfg.path else None


def _existing(cfg: DataConfig, base_dir: str | pathlib.Path, *, folder: bool = False) -> pathlib.Path:
    """`data.path` resolved, or DataError when nothing (or a folder where a file is read) is there."""
    path = _resolve_path(cfg.path, base_dir)
    if not path.exists():
        raise DataError(f"data.path: {cfg.path!r} does not exist (looked in the working "
                        f"directory and beside the config)")
    if path.is_dir() and not folder:
        raise DataError(f"data.path: {cfg.path!r} is a folder, not a {cfg.source} file")
    return path


def _load_csv(cfg, base_dir):
    import pandas as pd

    path = _existing(cfg, base_dir)
    try:
        frame = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise DataError(f"data.path: {str(path)!r} is empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError, OSError) as error:
        raise DataError(f"data.path: {str(path)!r} is not a readable CSV "
                        f"({str(error).splitlines()[0]})") from None
    if len(frame) == 0:
        raise DataError(f"data.path: {str(path)!r} has a header but no rows")
    return _from_table(frame, cfg, path.name, first_row=2, row_word="line")


def _load_parquet(cfg, base_dir):
    """A Parquet file (or a folder of them, as pandas reads it), rows numbered from 0."""
    import pandas as pd

    try:
        import pyarrow
    except ImportError:
        raise DataError("data.source: 'parquet' needs pyarrow, which is not installed; "
                        'pip install "kfold-clr[parquet]"') from None
    path = _existing(cfg, base_dir, folder=True)
    try:
        frame = pd.read_parquet(path, engine="pyarrow")
    except (OSError, ValueError, pyarrow.ArrowException) as error:
        raise DataError(f"data.path: {str(path)!r} is not a readable Parquet file "
                        f"({(str(error).splitlines() or [type(error).__name__])[0]})") from None
    if len(frame) == 0:
        raise DataError(f"data.path: {str(path)!r} has columns but no rows")
    return _from_table(frame, cfg, path.name, first_row=0, row_word="row")


def _from_table(frame, cfg, name, *, first_row, row_word):
    """A table's target, feature and group columns, checked (the csv and parquet readers).

    Args:
        frame: pandas.DataFrame with at least one row.
        name: str. The file's name, for messages.
        first_row: int. The number of the first row in messages (a CSV's first data line is 2).
        row_word: str. "line" (CSV) or "row".
    """
    import pandas as pd

    columns = list(frame.columns)
    listing = ", ".join(map(str, columns))
    for key in ("target", "groups"):
        column = getattr(cfg, key)
        if column is not None and column not in columns:
            raise DataError(f"data.{key}: column {column!r} is not in {name} (columns: {listing})")
    if cfg.features is not None:
        missing = [column for column in cfg.features if column not in columns]
        if missing:
            raise DataError(f"data.features: column {missing[0]!r} is not in {name} (columns: {listing})")
        features = list(cfg.features)
    else:
        features = [column for column in columns if column not in (cfg.target, cfg.groups)]
    if not features:
        raise DataError(f"data.features: {name} has no feature columns besides the target")
    _refuse_non_numeric(frame, features, name, first_row=first_row)
    groups = frame[cfg.groups].to_numpy() if cfg.groups else None
    if groups is not None and pd.isna(groups).any():
        raise DataError(f"data.groups: column {cfg.groups!r} of {name} has missing values")
    return _Loaded(frame[features].to_numpy(dtype=float, na_value=np.nan), frame[cfg.target].to_numpy(),
                   groups, None, f"{name} ({len(frame)} rows, {len(features)} features, target {cfg.target!r})",
                   columns=features, first_row=first_row, row_word=row_word)


def _refuse_non_numeric(frame, features, name, *, first_row):
    """DataError naming the feature columns that are not numbers, with a value of the first."""
    import pandas as pd

    non_numeric = [column for column in features if not pd.api.types.is_numeric_dtype(frame[column])]
    if not non_numeric:
        return
    values = frame[non_numeric[0]]
    bad = []
    if pd.api.types.is_object_dtype(values) or pd.api.types.is_string_dtype(values):
        bad = np.flatnonzero(pd.to_numeric(values, errors="coerce").isna() & values.notna())
    example = f"e.g. {values.iloc[bad[0]]!r} in row {bad[0] + first_row}" if len(bad) else f"dtype {values.dtype}"
    if len(non_numeric) == 1:
        what = f"column {non_numeric[0]!r} of {name} is not numeric ({example}); encode it"
    else:
        named = ", ".join(map(repr, non_numeric[:5])) + (f" and {len(non_numeric) - 5} more"
                                                         if len(non_numeric) > 5 else "")
        what = f"columns {named} of {name} are not numeric ({non_numeric[0]!r}: {example}); encode them"
    raise DataError(f"data.features: {what} or leave {'it' if len(non_numeric) == 1 else 'them'} "
                    "out with data.features")


def _load_images(cfg, base_dir):
    """A folder of PNG / JPEG images: class folders, or any folder with `data.table` naming each
    image's label and group. The pixels are decoded once into the cache (`kfold_clr.data.images.cache`)
    and memory-mapped: x is (n, height, width, channels) uint8, read-only."""
    from kfold_clr.data.images.cache import cache_folder, cached_pixels
    from kfold_clr.data.images.table import class_folder_images, table_file, table_images

    path = _existing(cfg, base_dir, folder=True)
    if not path.is_dir():
        raise DataError(f"data.path: {cfg.path!r} is a file; source 'images' reads a folder "
                        "with one subfolder of images per class (or any folder with data.table)")
    if cfg.table is not None:
        images = table_images(path, table_file(cfg.table, base_dir), cfg)
    else:
        images = class_folder_images(path, cfg.path)
    folder = cache_folder(cfg.cache, base_dir=base_dir, image_folder=path)
    pixels, key = cached_pixels(path, images.files, image_size=cfg.image_size, color_mode=cfg.color_mode,
                                folder=folder)
    names, counts = np.unique(images.labels, return_counts=True)
    listed = ", ".join(f"{name} {count}" for name, count in list(zip(names, counts))[:12])
    more = f" and {len(names) - 12} more" if len(names) > 12 else ""
    height, width = cfg.image_size
    return _Loaded(pixels, images.labels, images.groups, "classification",
                   f"{path.name} ({len(images.files)} images in {len(names)} classes: {listed}{more}; labels from "
                   f"{images.origin}; resized to {height}x{width} {cfg.color_mode})", digest=key, files=images.files)


def _load_npz(cfg, base_dir):
    path = _existing(cfg, base_dir)
    arrays = load_npz(path, what="data.path")
    for key in ("x", "y"):
        if key not in arrays:
            raise DataError(f"data.path: {path.name} has no array {key!r} "
                            f"(arrays: {', '.join(arrays) or 'none'}); it needs x, y and optionally groups")
    x, y = arrays["x"], arrays["y"]
    if x.dtype == bool:
        x = x.astype(np.float32)
    if not np.issubdtype(x.dtype, np.number):
        raise DataError(f"data.path: array 'x' of {path.name} must be numeric, got dtype {x.dtype}")
    if x.ndim == 0 or len(x) == 0:
        raise DataError(f"data.path: array 'x' of {path.name} has no samples (shape {x.shape})")
    x = x.reshape(len(x), -1) if x.ndim != 2 else x
    return _Loaded(x, _npz_target(y, path.name), arrays.get("groups"), None, f"{path.name} ({len(x)} samples)")


def _npz_target(y, name):
    """A 1-D target: (n, 1) is flattened and one-hot rows become class indices."""
    if y.ndim == 2 and y.shape[1] == 1:
        return y[:, 0]
    if y.ndim == 2 and np.issubdtype(y.dtype, np.number) and np.isin(y, (0, 1)).all() and (y.sum(axis=1) == 1).all():
        return np.argmax(y, axis=1)  # one-hot labels
    if y.ndim != 1:
        raise DataError(f"data.path: array 'y' of {name} has shape {y.shape}; it must hold one target "
                        "per sample (shape (n,), (n, 1) or one-hot (n, classes))")
    return y


# ----------------------------------------------------------------------------- checks
def _infer_task(y, stated, inferred):
    if stated != "auto":
        return stated
    if inferred is not None:
        return inferred
    if y.dtype.kind in "OUSb":
        return "classification"
    if y.dtype.kind == "f" and not np.all(np.mod(y[np.isfinite(y)], 1) == 0):
        return "regression"
    return "classification" if len(np.unique(y)) <= max(20, int(0.05 * len(y))) else "regression"


def _rows(indices, word, first_row, limit=3) -> str:
    """'line 3' or 'lines 4, 5, 9 and 2 more' for 0-based sample indices."""
    numbers = [int(i) + first_row for i in indices]
    more = f" and {len(numbers) - limit} more" if len(numbers) > limit else ""
    return f"{word}{'s' if len(numbers) > 1 else ''} " + ", ".join(map(str, numbers[:limit])) + more


def _check_finite(x, y, source, *, columns=None, first_row=0, row_word="row"):
    """NaN, infinite or float32-overflowing features, named by column and row; missing targets.

    Args:
        columns: feature names (default "column j"). first_row: the number of the
            first sample's row (a CSV's first data line is 2). row_word: "row" or "line".
    """
    if x.ndim != 2 or x.shape[1] == 0:
        raise DataError(f"data: features of {source} must be a 2-D table with at least one column")
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(x) | (np.abs(x) > np.finfo(np.float32).max)
    if bad.any():
        bad_columns = np.flatnonzero(bad.any(axis=0))
        names = [repr(name) for name in columns] if columns is not None else [f"column {j}" for j in range(x.shape[1])]
        where = "; ".join(f"{names[j]}: {_rows(np.flatnonzero(bad[:, j]), row_word, first_row)}"
                          for j in bad_columns[:3])
        more = f"; and {len(bad_columns) - 3} more columns" if len(bad_columns) > 3 else ""
        raise DataError(f"data: features of {source} contain NaN, infinite or too large (beyond float32) "
                        f"values in {int(bad.any(axis=1).sum())} of {len(x)} samples ({where}{more}); "
                        "impute, clip or drop them")
    import pandas as pd

    missing = np.asarray(pd.isna(y))
    if missing.any():
        raise DataError(f"data.target: {source} has missing target values "
                        f"({_rows(np.flatnonzero(missing), row_word, first_row)})")


def load_dataset(cfg: DataConfig, *, base_dir: str | pathlib.Path = ".", seed: int = 0) -> Dataset:
    """Load the data set a `data:` section describes, checked and encoded.

    Args:
        cfg: DataConfig. The validated `data:` section.
        base_dir: path. Where relative file paths are also looked up (the config's folder).
        seed: int. Seed of generated data sets.

    Returns:
        Dataset with float32 features and encoded targets.

    Raises:
        DataError: one line naming the key or file and what is wrong.
    """
    readers = {"sklearn": lambda: _load_sklearn(cfg), "synthetic": lambda: _load_synthetic(cfg, seed),
               "csv": lambda: _load_csv(cfg, base_dir), "parquet": lambda: _load_parquet(cfg, base_dir),
               "npz": lambda: _load_npz(cfg, base_dir), "images": lambda: _load_images(cfg, base_dir)}
    loaded = readers[cfg.source]()
    x, y, groups, task, description = loaded.x, loaded.y, loaded.groups, loaded.task, loaded.description
    pixels = loaded.files is not None  # an image cache: uint8, memory-mapped, not copied
    x, y = (x if pixels else np.asarray(x)), np.asarray(y)
    if len(x) != len(y):
        raise DataError(f"data: {description} has {len(x)} feature rows but {len(y)} targets")
    if groups is not None and len(groups) != len(y):
        raise DataError(f"data.groups: {len(groups)} group labels for {len(y)} samples")
    if len(y) == 0:
        raise DataError(f"data: {description} has no samples")
    if not pixels:
        _check_finite(x if x.dtype.kind == "f" else np.asarray(x, dtype=float), y, description,
                      columns=loaded.columns, first_row=loaded.first_row, row_word=loaded.row_word)
    task = _infer_task(y, cfg.task, task)
    if task == "classification":
        classes, encoded = np.unique(y.astype(str) if y.dtype.kind == "O" else y, return_inverse=True)
        if len(classes) < 2:
            raise DataError(f"data.target: {description} has a single class ({classes[0]!r}); "
                            "classification needs at least two")
        y, n_outputs, class_names = encoded.astype(np.int32), len(classes), classes.tolist()
    else:
        try:
            with np.errstate(over="ignore"):
                y = y.astype(np.float32)
        except ValueError:
            raise DataError(f"data.target: {description} has a non-numeric target; "
                            "set data.task: classification or fix the column") from None
        bad = np.flatnonzero(~np.isfinite(y))
        if len(bad):
            raise DataError(f"data.target: {description} has infinite or too large (beyond float32) target "
                            f"values ({_rows(bad, loaded.row_word, loaded.first_row)})")
        n_outputs, class_names = 1, None
    x = x if pixels else np.asarray(x, dtype=np.float32)
    values = int(np.prod(x.shape[1:]))
    if cfg.image_shape is not None and int(np.prod(cfg.image_shape)) != values:
        raise DataError(f"data.image_shape: {cfg.image_shape} holds {int(np.prod(cfg.image_shape))} "
                        f"values but each sample has {values} {'pixel values' if pixels else 'features'}")
    return Dataset(x=x, y=y, groups=groups, task=task, n_outputs=n_outputs, class_names=class_names,
                   description=description, source_digest=loaded.digest, files=loaded.files)


# ----------------------------------------------------------------------------- per-fold preprocessing
class FoldPreprocessor:
    """Scaling (and reshape) fitted on one fold's training split only.

    Args:
        scale: str. "none", "standard" or "minmax" for the features.
        scale_target: bool. Standardize a regression target (metrics are then in
            units of the training split's target standard deviation).
        task: str. "classification" or "regression".
        image_shape: list of int or None. Per-sample shape for CNNs, e.g. [8, 8, 1].
    """

    def __init__(self, *, scale: str = "standard", scale_target: bool = True, task: str = "classification",
                 image_shape: Sequence[int] | None = None) -> None:
        self.scale, self.scale_target, self.task = scale, scale_target, task
        self.image_shape = tuple(image_shape) if image_shape else None

    def fit(self, x_train: np.ndarray, y_train: np.ndarray) -> FoldPreprocessor:
        from sklearn.preprocessing import MinMaxScaler, StandardScaler

        scalers = {"standard": StandardScaler, "minmax": MinMaxScaler}
        self.x_scaler_ = scalers[self.scale]().fit(x_train) if self.scale in scalers else None
        self.y_mean_, self.y_std_ = 0.0, 1.0
        if self.task == "regression" and self.scale_target:
            self.y_mean_ = float(np.mean(y_train))
            self.y_std_ = float(np.std(y_train)) or 1.0
        return self

    def transform(self, x: np.ndarray, y: np.ndarray | None = None) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        x = self.x_scaler_.transform(x) if self.x_scaler_ is not None and len(x) else x
        x = np.asarray(x, dtype=np.float32)
        if self.image_shape:
            x = x.reshape((len(x), *self.image_shape))
        if y is None:
            return x
        if self.task == "regression":
            y = ((y - self.y_mean_) / self.y_std_).astype(np.float32)
        return x, y

    def fit_transform(self, x_train: np.ndarray, y_train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.fit(x_train, y_train).transform(x_train, y_train)
