"""ezpz._files: atomic replacement with the umask's mode, never mkstemp's 0600."""

from __future__ import annotations

import os
import stat

import pytest

from ezpz._files import atomic_path, atomic_write_bytes, atomic_write_text


@pytest.fixture
def umask():
    old = os.umask(0o022)
    os.umask(old)

    def _set(mask: int) -> None:
        os.umask(mask)

    yield _set
    os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def _leftovers(directory) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


@pytest.mark.parametrize(("mask", "expected"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_modes_follow_the_umask(tmp_path, umask, mask, expected):
    umask(mask)
    a = atomic_write_bytes(tmp_path / "a.bin", b"\x00\x01")
    b = atomic_write_text(tmp_path / "sub" / "b.txt", "héllo\n")
    with atomic_path(tmp_path / "c.dat") as tmp:
        tmp.write_bytes(b"c")  # a writer that truncates the prepared file
    with atomic_path(tmp_path / "d.dat") as tmp:
        tmp.unlink()  # a writer that re-creates it with its own mode
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT, 0o600)
        os.close(fd)
    for path in (a, b, tmp_path / "c.dat", tmp_path / "d.dat"):
        assert _mode(path) == expected, path
    assert a.read_bytes() == b"\x00\x01"
    assert b.read_text(encoding="utf-8") == "héllo\n"
    assert (tmp_path / "c.dat").read_bytes() == b"c"
    assert _leftovers(tmp_path) == [] and _leftovers(tmp_path / "sub") == []


def test_replaces_an_existing_file_whole(tmp_path):
    dest = tmp_path / "report.md"
    dest.write_text("old old old old\n")
    atomic_write_text(dest, "new\n")
    assert dest.read_text() == "new\n"
    with atomic_path(dest) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".report.md.")
        assert tmp.name.endswith(".tmp") and tmp.exists()
        tmp.write_text("newer\n")
        assert dest.read_text() == "new\n"  # not visible before the rename
    assert dest.read_text() == "newer\n"


def test_an_error_leaves_the_destination_and_no_temp(tmp_path):
    dest = tmp_path / "train.h5"
    dest.write_bytes(b"keep")
    with pytest.raises(RuntimeError, match="writer failed"), atomic_path(dest) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("writer failed")
    with pytest.raises(KeyboardInterrupt), atomic_path(dest) as tmp:
        raise KeyboardInterrupt
    assert dest.read_bytes() == b"keep"
    assert _leftovers(tmp_path) == []


def test_a_failed_write_leaves_no_temp(tmp_path):
    dest = tmp_path / "x.txt"
    with pytest.raises(TypeError):
        atomic_write_bytes(dest, "not bytes")  # type: ignore[arg-type]
    with pytest.raises(UnicodeEncodeError):
        atomic_write_text(dest, "\ud800")
    assert not dest.exists() and _leftovers(tmp_path) == []
