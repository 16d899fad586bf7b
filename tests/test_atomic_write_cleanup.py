"""An atomic write that fails removes only the temporary file it made itself, in the folder of the
path it writes (which the link guard has checked): never the old file, a neighbour, or anything
outside, whatever the path's name."""

import os

import pytest

from kfold_clr.errors import ResultsError
from kfold_clr.storage.ownership import atomic_write


def _listing(root):
    return sorted(str(path.relative_to(root)) for path in root.rglob("*"))


@pytest.mark.parametrize("name", ["summary.csv", ".hidden", "a b ü.csv", "..x", "-rf"])
@pytest.mark.parametrize("failure", [RuntimeError("stop"), OSError(28, "No space left on device"), KeyboardInterrupt()])
def test_a_failed_write_removes_only_its_own_temporary_file(tmp_path, name, failure):
    results, outside = tmp_path / "results", tmp_path / "outside"
    results.mkdir()
    outside.mkdir()
    (results / name).write_text("old content")
    for neighbour in (f".{name}.user.tmp", f".{name}.tmp", "notes.txt"):  # look like ours; are not
        (results / neighbour).write_text("the user's")
    (outside / "keep.txt").write_text("the user's")
    before, seen = _listing(tmp_path), {}

    def write(stream):
        (seen["tmp"],) = set(_listing(tmp_path)) - set(before)  # the one file it made, while it writes
        stream.write(b"half")
        raise failure

    with pytest.raises((ResultsError, RuntimeError, KeyboardInterrupt)):
        atomic_write(results / name, write)
    assert _listing(tmp_path) == before  # its own temporary file is gone, nothing else is
    assert os.path.dirname(seen["tmp"]) == "results" and not (tmp_path / seen["tmp"]).exists()
    assert (results / name).read_text() == "old content"
    assert (outside / "keep.txt").read_text() == "the user's"


def test_a_write_through_dot_dot_or_a_link_is_refused_before_any_temporary_file(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    (tmp_path / "victim.txt").write_text("user data")
    (results / "linked.csv").symlink_to(tmp_path / "victim.txt")
    before = _listing(tmp_path)
    with pytest.raises(ResultsError, match="symbolic link"):
        atomic_write(results / "linked.csv", lambda stream: stream.write(b"x"))
    assert _listing(tmp_path) == before and (tmp_path / "victim.txt").read_text() == "user data"
