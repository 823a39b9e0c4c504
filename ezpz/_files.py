"""Atomic file replacement: write beside the destination, fsync, rename.

One helper for every "write to a temporary name, then rename" in ezpz, so
readers never see half a file and every output gets the same permissions:

* the temporary file lives in the destination's directory (same file system,
  so the final :func:`os.replace` is atomic) and is named
  ``.{dest.name}.{random}.tmp``;
* it is created with mode ``0o666`` through ``open(2)``, so the kernel applies
  the process umask (and any default ACL) exactly as it does for a plain
  ``open(path, "w")``: ``0644`` under umask 022, ``0600`` under 077. (The
  ``0600`` that :func:`tempfile.mkstemp` gives is never what a user asked for.);
* its data is fsynced before the rename, and the directory after it (best
  effort), so a crash leaves either the old file or the new one;
* on any error (``BaseException`` included) the temporary file is removed and
  the destination is left as it was.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

__all__ = ["TEMP_SUFFIX", "atomic_path", "atomic_write_bytes", "atomic_write_text"]

#: every temporary file made here ends with this suffix
TEMP_SUFFIX = ".tmp"

StrPath = str | os.PathLike[str]


def _create_temp(dest: Path) -> tuple[int, Path]:
    """Create ``.{dest.name}.{random}.tmp`` beside ``dest`` (mode 0o666 & ~umask)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        tmp = dest.with_name(f".{dest.name}.{secrets.token_hex(4)}{TEMP_SUFFIX}")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name beside {dest}")


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def _replace_or_remove(tmp: Path, dest: Path, fsync: bool) -> Iterator[None]:
    """After the body fills ``tmp``, rename it over ``dest``; on any error remove it."""
    try:
        yield
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    if fsync:
        _fsync_dir(dest.parent)


@contextlib.contextmanager
def atomic_path(dest: StrPath, *, fsync: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; on success it replaces ``dest``.

    The temporary file already exists (empty, with the umask's mode) so a
    writer that truncates it (``h5py.File(tmp, "w")``, ``shutil.copyfile``,
    ``xarray.Dataset.to_netcdf``) keeps that mode; if the writer re-creates
    it, the mode is restored before the rename. On any exception the
    temporary file is removed and the exception propagates. The parent
    directory is created if missing.

    >>> with atomic_path(out / "train.h5") as tmp:  # doctest: +SKIP
    ...     ds.to_netcdf(tmp)
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temp(dest)
    try:
        mode = os.fstat(fd).st_mode & 0o7777
    finally:
        os.close(fd)
    with _replace_or_remove(tmp, dest, fsync):
        yield tmp
        if os.stat(tmp).st_mode & 0o7777 != mode:
            os.chmod(tmp, mode)
        if fsync:
            rfd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(rfd)
            finally:
                os.close(rfd)


def atomic_write_bytes(path: StrPath, data: bytes, *, fsync: bool = True) -> Path:
    """Replace ``path`` with ``data`` atomically (mode ``0o666 & ~umask``); returns the path."""
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temp(dest)
    with _replace_or_remove(tmp, dest, fsync):
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
    return dest


def atomic_write_text(
    path: StrPath, text: str, *, encoding: str = "utf-8", fsync: bool = True
) -> Path:
    """Replace ``path`` with ``text`` atomically (no newline translation); returns the path."""
    return atomic_write_bytes(path, text.encode(encoding), fsync=fsync)
