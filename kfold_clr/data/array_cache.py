"""The notebook's array cache: `cross_validate`'s arrays and splits as content-addressed .npz files.

They live in ``$KFOLD_CLR_CACHE/arrays/`` (default ``~/.cache/kfold_clr/arrays/``),
named by the hash of their bytes: ``data-<sha256[:24]>.npz``, ``splits-<...>.npz``.

- A file found there is checked against its name's hash before it is used; one that
  was damaged or replaced is written again (with a warning).
- The folder is bounded: after a write, the least recently used files go until it
  holds at most ``KFOLD_CLR_CACHE_MAX_BYTES`` (default 2 GiB, `DEFAULT_MAX_BYTES`);
  the files of the current call always stay.
- Only files named like the cache's own, in ``arrays/``, are ever deleted: other
  files and other folders under the cache root are left alone.
"""

from __future__ import annotations

import hashlib
import io
import os
import pathlib
import re
import sys
from collections.abc import Callable, Iterable
from typing import IO

from kfold_clr.errors import ConfigError
from kfold_clr.storage.ownership import atomic_write

DEFAULT_MAX_BYTES = 2 * 1024 ** 3
MAX_BYTES_VARIABLE = "KFOLD_CLR_CACHE_MAX_BYTES"
_OWN_FILE = re.compile(r"(?:data|splits)-(?P<digest>[0-9a-f]{24})\.npz")


def cache_dir() -> pathlib.Path:
    """``$KFOLD_CLR_CACHE/arrays`` (default ``~/.cache/kfold_clr/arrays``), absolute, created if needed."""
    root = pathlib.Path(os.environ.get("KFOLD_CLR_CACHE", "~/.cache/kfold_clr")).expanduser()
    folder = pathlib.Path(os.path.abspath(root)) / "arrays"  # a relative one would name other files after a chdir
    if folder.is_symlink():  # eviction deletes files in it: never in a folder a link leads to
        raise ConfigError(f"KFOLD_CLR_CACHE: {str(folder)!r} is a symbolic link; kfold_clr keeps its array "
                          "cache in a folder of its own: remove the link, or point KFOLD_CLR_CACHE elsewhere")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def max_bytes() -> int:
    """The size bound of the cache folder, from `MAX_BYTES_VARIABLE` (ConfigError when not a size)."""
    text = os.environ.get(MAX_BYTES_VARIABLE)
    if text is None:
        return DEFAULT_MAX_BYTES
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise ConfigError(f"{MAX_BYTES_VARIABLE}: {text!r} must be a number of bytes >= 0 "
                          f"(default {DEFAULT_MAX_BYTES}, 2 GiB)")
    return value


def cached(prefix: str, write: Callable[[IO[bytes]], object]) -> pathlib.Path:
    """The cache file holding what `write(binary_stream)` writes, written (or rewritten) when needed.

    Args:
        prefix: str. "data" or "splits".
        write: callable(stream). Writes the .npz content.

    Returns:
        pathlib.Path. The file, its content checked against the hash in its name.
    """
    buffer = io.BytesIO()
    write(buffer)
    content = buffer.getvalue()
    path = cache_dir() / f"{prefix}-{hashlib.sha256(content).hexdigest()[:24]}.npz"
    if not _intact(path):
        if path.exists() or path.is_symlink():
            print(f"kfold-clr: warning: cache file {path} was damaged or replaced; writing it again",
                  file=sys.stderr)
            if path.is_symlink():
                path.unlink()  # the link only, never what it points to
        atomic_write(path, lambda stream: stream.write(content))
    else:
        os.utime(path)  # used now: the last to be evicted
    evict(keep=(path,))
    return path


def _intact(path: pathlib.Path) -> bool:
    """Whether `path` is a plain file whose bytes hash to the digest in its name."""
    match = _OWN_FILE.fullmatch(path.name)
    if match is None or path.is_symlink() or not path.is_file():
        return False
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:24] == match["digest"]


def evict(*, keep: Iterable[str | pathlib.Path] = (), limit: int | None = None) -> list[pathlib.Path]:
    """Delete the least recently used cache files until the folder holds at most `limit` bytes.

    Args:
        keep: paths. Files that stay whatever their age (those of the current call).
        limit: int or None. Default `max_bytes()`.

    Returns:
        list of pathlib.Path. The files deleted.
    """
    limit = max_bytes() if limit is None else limit
    keep = {pathlib.Path(path).resolve() for path in keep}
    own = []
    for path in cache_dir().iterdir():
        if _OWN_FILE.fullmatch(path.name) and path.is_file() and not path.is_symlink():
            stat = path.stat()
            own.append((stat.st_mtime, stat.st_size, path))
    total = sum(size for _, size, _ in own)
    deleted = []
    for _, size, path in sorted(own, key=lambda item: item[0]):
        if total <= limit:
            break
        if path.resolve() in keep:
            continue
        try:
            path.unlink()
        except OSError:
            continue  # another process took it first, or it cannot go: the bound is best effort
        total -= size
        deleted.append(path)
    return deleted
