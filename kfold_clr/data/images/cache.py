"""Decoded pixels on disk: every image decoded and resized once, on all cores, into one uint8
`.npy` array that later runs, folds and strategies memory-map read-only.

The file is named by a key of the images' content (their relative names and bytes), the
size they are resized to and the colour mode, so any change of them makes a new file and
an unchanged folder is never decoded again. It is written to a temporary file and renamed,
so a reader never sees half of it. A CRC-32 of the array's bytes follows them in the file
(:func:`seal_into_place`, also used by the backbone features cache) and is checked once per
file per process (:func:`open_sealed`, about 0.6 s per GB on two cores): a file of the wrong
size or shape (a killed copy, a full disk) or with any byte changed is decoded again.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import os
import pathlib
import shutil
import sys
import time
import zlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from kfold_clr.errors import DataError

FORMAT_VERSION = "1"  # bump when decoding changes: every cached file is then rebuilt
_PILLOW_MODES = {"rgb": "RGB", "grayscale": "L"}
_CHUNK = 64  # images per task of a decoding thread
_IN_PROCESS = 256  # folders this small are decoded in the calling thread
_SEAL = b"\nkfold_clr crc32 "  # then 8 hex digits and a newline: the trailer after a cached array's bytes
_SEAL_SIZE = len(_SEAL) + 9
_CHECKSUM_BLOCK = 1 << 26  # bytes per CRC-32 (64 MiB): blocks are summed on all cores
_VERIFIED = set()  # (path, inode, size, mtime) of the cache files whose checksum this process has checked


def cache_folder(cache: str | None, *, base_dir: str | pathlib.Path, image_folder: str | pathlib.Path) -> pathlib.Path:
    """Where decoded pixels live: `data.cache` (relative to the config's folder), else
    `$KFOLD_CLR_CACHE/images`, else `~/.cache/kfold_clr/images`; never inside the image folder."""
    if cache is not None:
        folder, key = pathlib.Path(os.path.expandvars(cache)).expanduser(), "data.cache"
        folder = folder if folder.is_absolute() else pathlib.Path(base_dir) / folder
    else:
        root = os.environ.get("KFOLD_CLR_CACHE") or "~/.cache/kfold_clr"
        folder, key = pathlib.Path(os.path.expandvars(root)).expanduser() / "images", "KFOLD_CLR_CACHE"
    resolved, images = folder.resolve(), pathlib.Path(image_folder).resolve()
    if resolved == images or images in resolved.parents:
        raise DataError(f"{key}: {str(folder)!r} is inside the image folder {str(image_folder)!r}; decoded "
                        "pixels are never written there: choose a folder outside it")
    shared = {pathlib.Path(resolved.anchor): "the file-system root",
              pathlib.Path.home().resolve(): "your home directory",
              pathlib.Path.cwd().resolve(): "the working directory",
              pathlib.Path(base_dir).resolve(): "the folder holding the config"}
    if resolved in shared or resolved in images.parents:
        what = shared.get(resolved, "a folder holding the images")
        raise DataError(f"{key}: {str(folder)!r} is {what}; decoded pixels need a folder of their own, "
                        "e.g. ~/.cache/kfold_clr/images or a new folder beside the data")
    return resolved


def content_key(root: str | pathlib.Path, files: Sequence[str], *, image_size: Sequence[int], color_mode: str) -> str:
    """A hash of the files' relative names and bytes, the size and the colour mode (the cache's name)."""
    digest = hashlib.sha256(f"kfold_clr images v{FORMAT_VERSION}\x00{list(image_size)}\x00{color_mode}\x00".encode())
    for name in files:
        content = _read(pathlib.Path(root) / name, name)
        digest.update(f"{name}\x00{len(content)}\x00".encode())
        digest.update(content)
    return digest.hexdigest()[:32]


def _read(path: pathlib.Path, name: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise DataError(f"data.path: image {name!r} cannot be read ({error.strerror or error})") from None


def cached_pixels(root: str | pathlib.Path, files: Sequence[str], *, image_size: Sequence[int], color_mode: str,
                  folder: str | pathlib.Path, workers: int | None = None,
                  log: Callable[[str], object] | None = None) -> tuple[np.memmap, str]:
    """The images' pixels, (n, height, width, channels) uint8, memory-mapped read-only from the cache.

    Args:
        root: path. The image folder; `files` are relative to it.
        files: list of str. Relative posix paths, in row order.
        image_size: [height, width]. color_mode: "rgb" or "grayscale".
        folder: path. The cache folder (`cache_folder`).
        workers: int or None. Decoding threads (None: every core this process may use).
        log: callable(str) or None. Where the decoding is announced (default: stderr, for
            folders of more than a few hundred images).

    Returns:
        (pixels, key): the read-only memmap and the content key it is stored under.
    """
    key = content_key(root, files, image_size=image_size, color_mode=color_mode)
    channels = 3 if color_mode == "rgb" else 1
    shape = (len(files), *image_size, channels)
    path = pathlib.Path(folder) / f"{key}.npy"
    if path.is_symlink() or (path.exists() and not path.is_file()):
        raise DataError(f"data.cache: {str(path)!r} is not a file kfold_clr wrote (a folder or a link); "
                        "remove it, or choose another data.cache")
    pixels, problem = _open(path, shape)
    if pixels is not None:
        return pixels, key
    if log is None:  # a folder decoded in a moment is not announced
        log = announce if len(files) > _IN_PROCESS else (lambda message: None)
    if path.exists():
        announce(f"the decoded pixels in {path} are damaged ({problem}); decoding the images again")
    _build(path, root, files, shape, mode=_PILLOW_MODES[color_mode], workers=workers, log=log)
    pixels, problem = _open(path, shape)
    if pixels is None:
        raise DataError(f"data.cache: {str(path)!r} could not be read back after writing it ({problem})")
    return pixels, key


def announce(message: str) -> None:
    """`message` on stderr, as one `kfold-clr: ` line."""
    print(f"kfold-clr: {message}", file=sys.stderr, flush=True)


def _open(path, shape):
    """(pixels, None) if the cached array is there whole and unchanged, with this shape and dtype;
    else (None, what is wrong)."""
    return open_sealed(path, expected=lambda pixels: None if pixels.shape == shape and pixels.dtype == np.uint8
                       else f"not {shape} uint8")


# ----------------------------------------------------------------------------- checksums
def checksum(values: np.ndarray) -> str:
    """A CRC-32 of the array's bytes, 64 MiB blocks at a time on all cores, then a CRC-32 of the blocks'
    CRCs: any changed byte (any burst of up to 32 changed bits) changes it, wherever it is."""
    data = np.ascontiguousarray(values).reshape(-1).view(np.uint8)
    blocks = range(0, data.size, _CHECKSUM_BLOCK)
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(os.sched_getaffinity(0))) as pool:
        sums = list(pool.map(lambda start: zlib.crc32(data[start:start + _CHECKSUM_BLOCK]), blocks))
    return f"{zlib.crc32(np.asarray(sums, dtype='>u4').tobytes()):08x}"


def _seal_of(values: np.ndarray) -> bytes:
    return _SEAL + checksum(values).encode() + b"\n"


def seal_into_place(temporary: str | pathlib.Path, path: str | pathlib.Path) -> None:
    """Append the checksum of the `.npy` array at `temporary` after its bytes (numpy readers ignore
    it), sync the file and rename it to `path`: the file and its checksum arrive together."""
    values = np.load(temporary, mmap_mode="r")
    seal = _seal_of(values)
    del values
    with open(temporary, "ab") as stream:
        stream.write(seal)
        stream.flush()
        os.fsync(stream.fileno())
    os.replace(temporary, path)
    _VERIFIED.add(_stamp(path))  # written here: not checked again in this process


def _stamp(path: str | pathlib.Path) -> tuple[str, int, int, int]:
    stat = os.stat(path)
    return str(pathlib.Path(path).resolve()), stat.st_ino, stat.st_size, stat.st_mtime_ns


def open_sealed(path: str | pathlib.Path, *,
                expected: Callable[[np.ndarray], str | None]) -> tuple[np.memmap, None] | tuple[None, str]:
    """(array, None): the `.npy` array at `path`, memory-mapped read-only, whole and with the checksum
    `seal_into_place` wrote after it; else (None, what is wrong). The checksum is computed once per
    file (and size and time of change) per process.

    Args:
        path: path. The cache file.
        expected: callable(array) -> str or None. What is wrong with the array's shape or dtype.
    """
    try:
        values = np.load(path, mmap_mode="r", allow_pickle=False)
        stamp = _stamp(path)
    except (OSError, ValueError, EOFError):
        return None, "not a whole .npy array"
    wrong = expected(values)
    if wrong:
        return None, wrong
    end = values.offset + values.nbytes
    if stamp[2] == end:
        return None, "no checksum: written by an older kfold_clr"
    if stamp[2] != end + _SEAL_SIZE:
        return None, f"{stamp[2]:,} bytes where {end + _SEAL_SIZE:,} were written"
    if stamp in _VERIFIED:
        return values, None
    with open(path, "rb") as stream:
        stream.seek(end)
        seal = stream.read()
    if seal != _seal_of(values):
        return None, "its checksum does not match: bytes of it changed"
    _VERIFIED.add(stamp)
    return values, None


def _build(path, root, files, shape, *, mode, workers, log):
    """Decode every image into a temporary file beside `path`, then rename it into place."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DataError(f"data.cache: {str(path.parent)!r} cannot be created ({error.strerror or error})") from None
    needed = int(np.prod(shape)) + 4096
    free = shutil.disk_usage(path.parent).free
    if free < needed:
        raise DataError(f"data.cache: {str(path.parent)!r} has {free / 2**20:,.0f} MiB free; the decoded "
                        f"images need {needed / 2**20:,.0f} MiB: free space or set data.cache elsewhere")
    _remove_stale(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    started = time.perf_counter()
    try:
        np.lib.format.open_memmap(temporary, mode="w+", dtype=np.uint8, shape=shape).flush()
        _decode_all(temporary, root, files, shape, mode=mode, workers=workers, log=log)
        seal_into_place(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    seconds = time.perf_counter() - started
    log(f"decoded {len(files):,} images in {seconds:.1f} s ({len(files) / max(seconds, 1e-9):,.0f} images/s) "
        f"into {path}")


def _remove_stale(path: pathlib.Path) -> None:
    """Temporary copies of `path` left by runs that were killed (their process is gone)."""
    for temporary in path.parent.glob(f".{path.name}.*.tmp"):
        pid = temporary.name[len(path.name) + 2:-len(".tmp")]
        if pid.isdigit() and not pathlib.Path(f"/proc/{pid}").exists():
            temporary.unlink(missing_ok=True)


def _decode_all(target, root, files, shape, *, mode, workers, log):
    """Decode `files` into rows of the .npy at `target`, chunk by chunk: in this thread for
    small folders, else on a pool of threads (Pillow releases the GIL while it decodes and
    resizes, and threads need none of the care of processes: no re-import of the user's script,
    nothing to pickle); a progress bar on a terminal."""
    size = (shape[2], shape[1])  # Pillow's (width, height)
    chunks = [(start, files[start:start + _CHUNK]) for start in range(0, len(files), _CHUNK)]
    workers = workers or len(os.sched_getaffinity(0))
    pixels = np.load(target, mmap_mode="r+")
    try:
        with Progress(len(files), label="decoding images", log=log,
                      announcement=f"decoding {len(files):,} images (once; later runs read the cache)") as progress:
            if len(files) <= _IN_PROCESS or workers == 1:
                for start, names in chunks:
                    _raise_failure(_decode_chunk(pixels, root, start, names, size, mode))
                    progress.advance(len(names))
            else:
                with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
                    futures = {pool.submit(_decode_chunk, pixels, root, start, names, size, mode): len(names)
                               for start, names in chunks}
                    try:
                        for future in concurrent.futures.as_completed(futures):
                            _raise_failure(future.result())
                            progress.advance(futures[future])
                    except BaseException:
                        for future in futures:
                            future.cancel()
                        raise
        pixels.flush()
    finally:
        del pixels


def _raise_failure(failure: tuple[str, str] | None) -> None:
    if failure is not None:
        name, detail = failure
        raise DataError(f"data.path: image {name!r} cannot be read ({detail})")


def _decode_chunk(pixels, root, start, names, size, mode):
    """Decode `names` into rows `start...` of `pixels`; (name, reason) of the first image that
    cannot be decoded, or None."""
    from PIL import Image

    for row, name in enumerate(names, start=start):
        try:
            with Image.open(pathlib.Path(root) / name) as image:
                image.draft(mode, size)  # JPEG: decode at the smallest scale still >= the target size
                image = image.convert(mode)
                if image.size != size:
                    image = image.resize(size, Image.Resampling.BILINEAR)
                values = np.asarray(image, dtype=np.uint8)
        except Exception as error:  # noqa: BLE001 - any failure to read or decode is a problem of this file
            detail = ("not an image Pillow recognises" if isinstance(error, Image.UnidentifiedImageError)
                      else f"{type(error).__name__}: {(str(error).splitlines() or [''])[0]}")
            return name, detail
        pixels[row] = values.reshape(pixels.shape[1:])
    return None


class Progress:
    """A rich progress bar of a pass over `total` images on a terminal; elsewhere `announcement`
    through `log` when the pass starts; nothing at all with `log=None`.

    Args:
        total: int. Images in the pass.
        label: str. The bar's text.
        announcement: str. The line logged instead of the bar off a terminal.
        log: callable(str) or None.
    """

    def __init__(self, total: int, *, label: str, announcement: str, log: Callable[[str], object] | None) -> None:
        self.total, self.label, self.announcement, self.log, self._bar = total, label, announcement, log, None

    def __enter__(self) -> Progress:
        if self.log is None:
            return self
        if sys.stderr.isatty():
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
            )

            self._bar = Progress(TextColumn(self.label), BarColumn(), MofNCompleteColumn(),
                                 TimeRemainingColumn(), transient=True)
            self._bar.__enter__()
            self._task = self._bar.add_task(self.label, total=self.total)
        else:
            self.log(self.announcement)
        return self

    def advance(self, count: int) -> None:
        if self._bar is not None:
            self._bar.advance(self._task, count)

    def __exit__(self, *exc: Any) -> bool:
        if self._bar is not None:
            self._bar.__exit__(*exc)
        return False
