"""Reading an .npz archive that may be damaged: every failure is one DataError naming the file.

`numpy.load` reports a file that is not a zip by trying it as a pickle ("use
allow_pickle=True", advice that would run code from the file), and a truncated
one as a raw `zipfile.BadZipFile` or `zlib.error` from deep inside. Here each
becomes a one-line message that names the file and what is wrong with it.

Example:

```python
arrays = load_npz("data/patients.npz", what="data.path")   # {"x": ..., "y": ...}
```
"""

from __future__ import annotations

import pathlib
import zipfile
import zlib

import numpy as np

from kfold_clr.errors import DataError


def load_npz(path: str | pathlib.Path, *, what: str) -> dict[str, np.ndarray]:
    """Every array of the .npz at `path`, read in full (so a damaged member fails here, not later).

    Args:
        path: path. The .npz file.
        what: str. What the file is to the user, for the message (a config key such as
            "data.path", or "notebook cache file").

    Returns:
        dict name -> numpy array.

    Raises:
        DataError: the file is missing, not a zip archive, truncated or damaged, or holds
            Python objects (which are never unpickled).
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise DataError(f"{what}: {str(path)!r} is not a file")
    if not zipfile.is_zipfile(path):
        raise DataError(f"{what}: {str(path)!r} is not an .npz archive (not a zip file: truncated, or another "
                        "format); write it with numpy.savez")
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except ValueError as error:
        if "allow_pickle" in str(error) or "pickled" in str(error):
            raise DataError(f"{what}: {str(path)!r} holds arrays of Python objects, which kfold_clr never "
                            "unpickles (they can run code); save numeric or string arrays") from None
        raise _damaged(what, path, error) from None
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError, KeyError) as error:
        raise _damaged(what, path, error) from None


def _damaged(what: str, path: pathlib.Path, error: Exception) -> DataError:
    reason = str(error).splitlines()[0] if str(error) else type(error).__name__
    return DataError(f"{what}: {str(path)!r} is a damaged .npz archive ({reason}); write it again "
                     "with numpy.savez")
