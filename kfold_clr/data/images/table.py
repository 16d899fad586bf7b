"""Which images a data set holds and their labels and groups: class folders, or a table.

Without `data.table`, every subfolder of `data.path` is a class and its images are its
samples. With a table (CSV, one row per image), `data.file_column` names each row's image
(a file name unique under `data.path`, or a path relative to it), `data.target` its label
(else the image's class folder) and `data.groups` its group (e.g. the subject photographed).
"""

from __future__ import annotations

import collections
import dataclasses
import pathlib
from typing import TYPE_CHECKING, Optional

import numpy as np

from kfold_clr.errors import DataError

if TYPE_CHECKING:
    from kfold_clr.config import DataConfig

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_FIRST_LINE = 2  # a CSV's first data line


@dataclasses.dataclass
class ImageList:
    """The images of a data set, in row order, with their labels and optional groups.

    Attributes:
        files: list of str. Paths relative to the image folder (posix).
        labels: array of str (n,). groups: array (n,) or None.
        origin: str. How the labels were found, for the description.
    """

    files: list
    labels: np.ndarray
    groups: Optional[np.ndarray]
    origin: str


def is_image(path: pathlib.Path) -> bool:
    """A .png, .jpg or .jpeg file whose name is not hidden."""
    return not path.name.startswith(".") and path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()


def class_folder_images(folder: pathlib.Path, shown: str) -> ImageList:
    """One subfolder of images per class, the sorted folder names the classes (`shown`: data.path as written)."""
    classes = sorted(child for child in folder.iterdir() if child.is_dir() and not child.name.startswith("."))
    if len(classes) < 2:
        found = f" ({classes[0].name!r})" if classes else ""
        raise DataError(f"data.path: {shown!r} holds {len(classes)} class folder{found}; source 'images' "
                        "needs one subfolder of images per class, at least two (or a data.table with a target)")
    files = {child.name: sorted(f"{child.name}/{file.name}" for file in child.iterdir() if is_image(file))
             for child in classes}
    empty = [name for name, found in files.items() if not found]
    if empty:
        raise DataError(f"data.path: class folder {empty[0]!r} of {shown!r} holds no images "
                        f"({', '.join(IMAGE_SUFFIXES)})")
    names = [name for found in files.values() for name in found]
    return ImageList(names, _folder_labels(names), None, "class folders")


def table_images(folder: pathlib.Path, table_path: pathlib.Path, cfg: DataConfig) -> ImageList:
    """The images a table names, with labels (`cfg.target`, else class folders) and groups.

    Raises:
        DataError: missing columns, a row naming no image or an ambiguous name, two rows for one
            image, an image in no row (labels or groups from the table), an empty label or group.
    """
    frame = _read_table(table_path)
    name = table_path.name
    column = cfg.file_column or "file"
    for key, wanted in (("file_column", column), ("target", cfg.target), ("groups", cfg.groups)):
        if wanted is not None and wanted not in frame.columns:
            raise DataError(f"data.{key}: column {wanted!r} is not in {name} "
                            f"(columns: {', '.join(map(str, frame.columns))})")
    found = sorted(path.relative_to(folder).as_posix() for path in folder.rglob("*")
                   if is_image(path) and not _hidden(path.relative_to(folder)))
    by_name = collections.defaultdict(list)
    for relative in found:
        by_name[relative.rsplit("/", 1)[-1]].append(relative)
    known = set(found)
    row_of = {}
    for line, value in enumerate(frame[column].tolist(), start=_FIRST_LINE):
        relative = _match(value, known, by_name, where=f"{name} line {line}", column=column)
        if relative in row_of:
            raise DataError(f"data.table: {name} lines {row_of[relative]} and {line} both name image "
                            f"{relative!r}; keep one row per image")
        row_of[relative] = line
    if cfg.target is not None or cfg.groups is not None:
        unlisted = [relative for relative in found if relative not in row_of]
        if unlisted:
            more = f" and {len(unlisted) - 1} more" if len(unlisted) > 1 else ""
            raise DataError(f"data.table: image {unlisted[0]!r}{more} under data.path is in no row of {name}; "
                            "list every image, or move the others out of the folder")
    files = sorted(row_of)
    rows = np.array([row_of[relative] - _FIRST_LINE for relative in files], dtype=int)
    labels = _column(frame, cfg.target, rows, files, name, key="target") if cfg.target else _folder_labels(files)
    groups = _column(frame, cfg.groups, rows, files, name, key="groups") if cfg.groups else None
    origin = f"{name} column {cfg.target!r}" if cfg.target else "class folders"
    return ImageList(files, labels, groups, origin)


def _hidden(relative) -> bool:
    return any(part.startswith(".") for part in relative.parts)


def _read_table(path):
    import pandas as pd

    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise DataError(f"data.table: {str(path)!r} is empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError, OSError) as error:
        raise DataError(f"data.table: {str(path)!r} is not a readable CSV ({str(error).splitlines()[0]})") from None
    if len(frame) == 0:
        raise DataError(f"data.table: {str(path)!r} has a header but no rows")
    return frame


def _match(value, known, by_name, *, where, column) -> str:
    """The relative path a table value names: itself, or the one image with that file name."""
    text = str(value).strip().replace("\\", "/")
    if not text:
        raise DataError(f"data.file_column: {where} has an empty {column!r}")
    if text in known:
        return text
    candidates = by_name.get(text, []) if "/" not in text else []
    if len(candidates) > 1:
        listed = ", ".join(repr(c) for c in candidates[:3]) + (" ..." if len(candidates) > 3 else "")
        raise DataError(f"data.file_column: {where} names {text!r}, which is ambiguous under data.path "
                        f"({listed}); write the path relative to data.path")
    if not candidates:
        raise DataError(f"data.table: {where} names image {text!r}, which is not under data.path "
                        f"(or is not a {', '.join(IMAGE_SUFFIXES)} file)")
    return candidates[0]


def _column(frame, column, rows, files, name, *, key):
    values = frame[column].to_numpy()[rows]
    empty = [i for i, value in enumerate(values) if not str(value).strip()]
    if empty:
        raise DataError(f"data.{key}: {name} line {rows[empty[0]] + _FIRST_LINE} (image {files[empty[0]]!r}) "
                        f"has an empty {column!r}")
    return np.array([str(value).strip() for value in values])


def _folder_labels(files: list[str]) -> np.ndarray:
    """Each image's class folder (the first part of its relative path)."""
    flat = [relative for relative in files if "/" not in relative]
    if flat:
        raise DataError(f"data.target: image {flat[0]!r} is in no class folder; name the label column "
                        "with data.target, or put the images in one folder per class")
    return np.array([relative.split("/", 1)[0] for relative in files])


def table_file(table: str, base_dir: str | pathlib.Path) -> pathlib.Path:
    """`data.table` resolved as `data.path` is (beside the config when not found from here)."""
    from kfold_clr.config.base import resolve_path as _resolve_path

    path = _resolve_path(table, base_dir)
    if not path.is_file():
        raise DataError(f"data.table: {table!r} is not a file (looked in the working directory and "
                        "beside the config)")
    return path
