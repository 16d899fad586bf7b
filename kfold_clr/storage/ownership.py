"""What a run may touch: its own results directory, and inside it only paths it built.

A results directory belongs to kfold_clr when it carries the marker file
(``.kfold_clr``, written when the directory is first used). A run writes,
overwrites or deletes only inside a directory that is new, empty or marked, and
never in a place whose loss would hurt: ``/``, the home directory, the working
directory, or a folder that holds the config or the data.

Every path built from a name (strategy, fold, scope) goes through
:func:`inside`, which refuses one that resolves outside its parent (``..``, a
symbolic link). Every write and delete goes through :func:`guard`, which refuses
a path that is a link or passes through one below its results directory, so a
link planted there (``.lock.owner -> ~/.bashrc``) can never redirect a write;
:func:`remove` deletes one path or says why it could not.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import pathlib
import shutil
import tempfile
from collections.abc import Callable, Iterable
from typing import IO

from kfold_clr import __version__
from kfold_clr.errors import ResultsError

MARKER = ".kfold_clr"


def _resolved(path: str | os.PathLike[str]) -> pathlib.Path:
    return pathlib.Path(os.path.abspath(pathlib.Path(path).expanduser())).resolve()


def _contains(folder: pathlib.Path, path: pathlib.Path) -> bool:
    return path == folder or folder in path.parents


def check_output_dir(directory: str | os.PathLike[str], *, protected: Iterable[str | os.PathLike[str]] = (),
                     data_folder: str | os.PathLike[str] | None = None) -> pathlib.Path:
    """The resolved results directory, or ResultsError where a run must never write.

    Args:
        directory: path. The results directory asked for (``output.dir``).
        protected: paths. Files or folders (the config, the data) that the results
            directory must not contain.
        data_folder: path or None. A folder of data (images) that the results directory
            must not lie inside either: results there would be read as data.

    Returns:
        pathlib.Path, absolute with links resolved.
    """
    asked = str(directory)
    target = _resolved(directory)
    places = [(pathlib.Path(target.anchor), "the file-system root"),
              (_resolved(pathlib.Path.home()), "your home directory"),
              (_resolved(pathlib.Path.cwd()), "the working directory")]
    for place, what in places:
        if _contains(target, place):
            where = "is" if target == place else "contains"
            raise ResultsError(f"output.dir: {asked!r} {where} {what} ({place}); kfold_clr deletes and "
                               "overwrites files in its results directory, so give it a folder of its own, "
                               "e.g. results/NAME")
    for path in protected:
        path = _resolved(path)
        if _contains(target, path):
            raise ResultsError(f"output.dir: {asked!r} contains {path}, an input of this run; "
                               "give the results a folder of their own, e.g. results/NAME")
    if data_folder is not None and _contains(_resolved(data_folder), target):
        raise ResultsError(f"output.dir: {asked!r} is inside {_resolved(data_folder)}, the data folder of this run; "
                           "results there would be read as data; give them a folder of their own, e.g. results/NAME")
    return target


def claim(directory: str | os.PathLike[str], *, protected: Iterable[str | os.PathLike[str]] = ()) -> pathlib.Path:
    """Make `directory` this tool's results directory, or refuse with ResultsError.

    A new directory is created and marked; an existing one must be empty (it is
    then marked) or already carry the marker.

    Returns:
        pathlib.Path. The resolved directory.
    """
    target = check_output_dir(directory, protected=protected)
    marker = target / MARKER
    try:
        if target.exists() and not target.is_dir():
            raise ResultsError(f"output.dir: {str(directory)!r} is a file, not a folder")
        if marker.is_symlink() or (marker.exists() and not marker.is_file()):
            raise ResultsError(f"output.dir: {str(marker)!r} is not kfold_clr's marker file")
        if target.is_dir() and not marker.is_file() and any(target.iterdir()):
            raise ResultsError(
                f"output.dir: {str(directory)!r} already holds files that kfold_clr did not write "
                f"(no {MARKER} marker); choose a new or empty folder for the results")
        target.mkdir(parents=True, exist_ok=True)
        if not marker.is_file():
            stamp = {"kfold_clr": __version__,
                     "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
            with open(marker, "x", encoding="utf-8") as stream:
                json.dump(stamp, stream)
                stream.write("\n")
    except FileExistsError:
        pass  # another run marked it a moment ago: the directory is ours either way
    except OSError as error:
        raise ResultsError(f"output.dir: {str(directory)!r} cannot be written "
                           f"({error.strerror or error})") from None
    return target


def require_claimed(directory: str | os.PathLike[str]) -> pathlib.Path:
    """`directory`, resolved, if it carries the marker; ResultsError otherwise (for `report`)."""
    target = _resolved(directory)
    if not target.is_dir():
        raise ResultsError(f"{directory}: results directory not found")
    if not (target / MARKER).is_file():
        raise ResultsError(f"{directory}: not a kfold_clr results directory (no {MARKER} marker); "
                           "kfold_clr writes only into folders it created")
    return target


def inside(parent: str | os.PathLike[str], *parts: object) -> pathlib.Path:
    """``parent / parts...``, checked to stay inside `parent` once resolved.

    Raises:
        ResultsError: a part is empty, absolute or `..`, or a link leads out of `parent`.
    """
    parent = pathlib.Path(parent)
    path = parent.joinpath(*map(str, parts))
    for part in parts:
        text = str(part)
        if text in ("", ".", "..") or "/" in text or "\\" in text or os.path.isabs(text):
            raise ResultsError(f"{path}: {text!r} is not a plain file name")
    guard(path)
    if not _contains(_resolved(parent), _resolved(path)):
        raise ResultsError(f"{path}: resolves to {_resolved(path)}, outside {parent}; kfold_clr does not "
                           "follow links out of its results directory (remove the link)")
    return path


def results_root(path: str | os.PathLike[str]) -> pathlib.Path | None:
    """The results directory (a real folder carrying the marker) that `path` lies in, or None."""
    for parent in pathlib.Path(os.path.abspath(path)).parents:
        if not parent.is_symlink() and (parent / MARKER).is_file() and not (parent / MARKER).is_symlink():
            return parent
    return None


def guard(path: str | os.PathLike[str]) -> pathlib.Path:
    """`path`, checked before kfold_clr writes or deletes it: never through a symbolic link.

    Refuses (ResultsError) a path that is a link itself, and, inside a results
    directory (see `results_root`), one with a link among the folders between that
    directory and the path or one that resolves outside it. Outside any results
    directory (the notebook cache, `schema --output`) only the path itself is checked.

    Returns:
        pathlib.Path. The path, absolute.
    """
    path = pathlib.Path(os.path.abspath(pathlib.Path(path).expanduser()))
    root = results_root(path)
    below_root = [] if root is None else [path, *path.parents[:len(path.parts) - len(root.parts) - 1]]
    for part in below_root or [path]:
        if part.is_symlink():
            raise ResultsError(f"{part}: is a symbolic link (to {os.readlink(part)}); kfold_clr never writes "
                               "or deletes through a link, and did not create this one: remove it, then rerun")
    if root is not None and not _contains(_resolved(root), _resolved(path)):
        raise ResultsError(f"{path}: resolves to {_resolved(path)}, outside the results directory {root}")
    return path


def remove(path: str | os.PathLike[str]) -> None:
    """Delete a file or folder this tool wrote (no-op when absent); ResultsError if it cannot."""
    path = pathlib.Path(path)
    try:
        guard(path)
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    except OSError as error:
        raise ResultsError(f"{path}: cannot be deleted ({error.strerror or error}); "
                           "nothing after it was deleted") from None


# ----------------------------------------------------------------------------- atomic writes
_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[bytes]], object]) -> None:
    """Write a file through a temporary file and a rename: `write(stream)` fills it.

    Either the whole new content is there or the old file is untouched. A full
    disk or a read-only directory raises ResultsError naming the file, and so does
    a link at the path or among its folders (`kfold_clr.storage.ownership.guard`).
    """
    path = guard(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(handle, "wb") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the usual permissions
        os.replace(tmp, path)
    except OSError as error:
        _discard(tmp)
        raise ResultsError(f"{path}: cannot be written ({error.strerror or error}); "
                           "results written before are intact") from None
    except BaseException:
        _discard(tmp)
        raise


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """`atomic_write` of UTF-8 text."""
    atomic_write(path, lambda stream: stream.write(text.encode("utf-8")))


def _discard(tmp: str | None) -> None:
    if tmp is not None:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
