"""A CSV file whose columns grow while rows are appended, never torn, never O(n^2).

Layout of the file::

    step,loss,lr,grad_norm\\n          <- header text
    \\n\\n\\n ... \\n                       <- padding: blank lines reserved for the header
    0,0.5,0.0001\\n                     <- rows, appended; a row may be shorter than
    1,0.3,0.0001,0.8\\n                    the header (readers fill the missing cells)

- **Rows** are appended with one ``pwrite`` each. A SIGKILL can still cut a
  write that crosses a page boundary (Linux stops a write between pages when
  a fatal signal is pending), so the last line of a killed run may lack its
  newline; the next writer removes such a line before appending.
- **A new column** is written into the padding after the header text — one
  small ``pwrite`` that turns ``"\\n"`` bytes into ``",grad_norm"`` —
  *before* the first row that uses it. Blank lines are skipped by pandas, R,
  and Python's ``csv.DictReader``, so the file is valid before and after.
- When the padding is used up, or the small write would cross a page (the
  one place a kill could split a write), the file is rewritten once to a
  temporary name with twice the header room and renamed into place, which
  is atomic. Header room doubles, so rewrites are O(log(header length)) for
  the whole run: appending stays O(row), not O(file).

An existing file is continued (a restarted job appends). Its last line is
kept only when complete: a row without its newline (cut by something outside
ezpz's control) is removed before appending, never completed into a valid
looking row.

**Full disk.** A row is one ``pwrite``. When it is short or fails (``ENOSPC``,
``EFBIG`` from ``RLIMIT_FSIZE``, ``EDQUOT``), the file is truncated back to
the end of the last complete row and :class:`CsvWriteError` is raised; the
table then refuses further rows. Every row in the file is always whole.

**Spreadsheet formulas.** A string cell or header cell whose text starts
with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return gets a leading
``'`` (the usual rule against formula injection), and one that starts with
``'`` followed by such a character gets another ``'``, so the original is
recovered by dropping one leading ``'`` (:func:`unneutralize`). Numbers
(``-0.5``, also as strings) are left as they are. Only csv files do this;
every other output keeps keys and values as they are.
"""

from __future__ import annotations

import errno
import json
import math
import mmap
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

_MIN_HEADER_ROOM = 256
_PAGE = mmap.PAGESIZE
_NEEDS_QUOTES = frozenset(',"\n\r')
#: first characters a spreadsheet reads as the start of a formula
FORMULA_CHARS = frozenset("=+-@\t\r")


class CsvWriteError(OSError):
    """A row could not be written whole (disk full, file size limit).

    The file then ends at the last whole row.
    """


def _is_numeric_text(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def neutralize(text: str) -> str:
    """``text`` safe as a spreadsheet cell: a leading ``'`` before a formula character.

    ``"=1+1"`` -> ``"'=1+1"``; ``"'=x"`` -> ``"''=x"`` (so the rule reverses);
    numbers such as ``"-0.5"`` and other text are unchanged.
    """
    first = text.lstrip("'")[:1]
    if first and first in FORMULA_CHARS and not _is_numeric_text(text):
        return "'" + text
    return text


def unneutralize(text: str) -> str:
    """The original of a :func:`neutralize`-d cell (one leading ``'`` dropped when it was added)."""
    first = text.lstrip("'")[:1]
    if text.startswith("'") and first and first in FORMULA_CHARS:
        return text[1:]
    return text


def csv_field(value: Any) -> str:
    """One CSV cell: floats round-trip (``nan``/``inf`` spelled as pandas reads them).

    Text that a spreadsheet would run as a formula gets a leading ``'``
    (:func:`neutralize`).
    """
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, (list, tuple)):
        text = json.dumps([_jsonable(v) for v in value])
    else:
        try:
            text = repr(float(value)) if _is_number(value) else neutralize(str(value))
        except (TypeError, ValueError):
            text = neutralize(str(value))
    if any(ch in _NEEDS_QUOTES for ch in text):
        return '"' + text.replace('"', '""') + '"'
    return text


def _is_number(value: Any) -> bool:
    # numpy scalars and 0-d arrays behave like floats; strings do not.
    return hasattr(value, "__float__") and not isinstance(value, (str, bytes))


def _jsonable(value: Any) -> Any:
    # Python's json reads NaN/Infinity back as floats; other readers may need a flag.
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


class GrowingCsv:
    """Append rows (dicts) to ``path``; unseen keys become new columns."""

    def __init__(self, path: str | os.PathLike[str], first_columns: Sequence[str] = ()) -> None:
        self.path = Path(path)
        self.columns: list[str] = []
        self._index: dict[str, int] = {}
        self._fd: int | None = None
        self._header_len = 0  # bytes of header text (no newline)
        self._header_room = 0  # bytes from 0 to the first row: text + padding newlines
        self._end = 0  # where the next row goes
        self.rewrites = 0  # how many times the file was rewritten (for tests/benchmarks)
        self.failed: str | None = None  # set when a row could not be written whole
        self.dropped_tail = 0  # bytes of an incomplete last row removed on resume
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._cleanup_temp()
        if self.path.exists() and self.path.stat().st_size > 0:
            self._resume()
        else:
            self._rewrite(list(first_columns))
        missing = [c for c in first_columns if c not in self._index]
        if missing:
            self._add_columns(missing)

    # -- public --------------------------------------------------------------
    def append(self, row: Mapping[str, Any]) -> None:
        """Write one row; columns for new keys are added first."""
        index = self._index
        new = [key for key in row if key not in index]
        if new:
            self._add_columns(new)
            index = self._index
        cells = [""] * len(self.columns)
        last = -1
        for key, value in row.items():
            i = index[key]
            cells[i] = csv_field(value)
            if i > last:
                last = i
        line = (",".join(cells[: last + 1]) + "\n").encode()
        self._append_line(line)

    def _append_line(self, line: bytes) -> None:
        """One ``pwrite`` of a whole row; on a short or failed write, cut back and raise."""
        if self.failed is not None:
            raise CsvWriteError(errno.EIO, f"{self.path}: no more rows after: {self.failed}")
        assert self._fd is not None
        try:
            written = os.pwrite(self._fd, line, self._end)
        except OSError as exc:
            self._cut_back(exc)
            raise CsvWriteError(exc.errno, f"{self.path}: row not written: {exc.strerror}") from exc
        if written != len(line):
            err = CsvWriteError(
                errno.ENOSPC,
                f"{self.path}: short write ({written} of {len(line)} bytes): disk full "
                "or file size limit",
            )
            self._cut_back(err)
            raise err
        self._end += len(line)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _cut_back(self, exc: BaseException) -> None:
        """Remove the bytes of a partly written row (shrinking works on a full disk)."""
        self.failed = str(exc)
        try:
            if self._fd is not None:
                os.ftruncate(self._fd, self._end)
        except OSError:  # nothing more we can do
            pass

    # -- header --------------------------------------------------------------
    def _add_columns(self, names: Sequence[str]) -> None:
        addition = "".join(
            ("," if (self.columns or i) else "") + csv_field(str(n)) for i, n in enumerate(names)
        )
        data = addition.encode()
        start, stop = self._header_len, self._header_len + len(data)
        same_page = start // _PAGE == (stop - 1) // _PAGE
        # Keep two padding "\n" after the header: the one after `stop` ends the
        # header, the second marks the file as ours (see _resume: a torn last
        # row of our own file is removed, never completed).
        if stop < self._header_room - 1 and same_page and self._fd is not None:
            self._write_at(data, start)
            self._header_len = stop
            self._register(names)
        else:
            self._rewrite([*self.columns, *names])

    def _register(self, names: Sequence[str]) -> None:
        for name in names:
            self._index[name] = len(self.columns)
            self.columns.append(name)

    def _header_text(self, columns: Sequence[str]) -> bytes:
        return ",".join(csv_field(str(c)) for c in columns).encode()

    def _rewrite(self, columns: list[str]) -> None:
        """Write header + padding + existing rows to a temp file; rename it into place."""
        text = self._header_text(columns)
        room = len(text) + max(_MIN_HEADER_ROOM, len(text))
        tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)  # umask applies
        try:
            _write_all(fd, text + b"\n" * (room - len(text)))
            if self._fd is not None:
                self._copy_rows(self._fd, fd)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise
        os.close(fd)
        os.replace(tmp, self.path)
        self.close()
        self._fd = os.open(self.path, os.O_RDWR)
        self._end = room + (self._end - self._header_room if self._end else 0)
        self._header_len, self._header_room = len(text), room
        self.columns, self._index = [], {}
        self._register(columns)
        self.rewrites += 1

    def _copy_rows(self, src: int, dst: int) -> None:
        offset, end = self._header_room, self._end
        while offset < end:
            chunk = os.pread(src, min(1 << 20, end - offset), offset)
            if not chunk:
                break
            _write_all(dst, chunk)
            offset += len(chunk)

    def _resume(self) -> None:
        """Continue an existing file: read its header and padding, append after its end."""
        import csv

        self._fd = os.open(self.path, os.O_RDWR)
        size = os.fstat(self._fd).st_size
        head = os.pread(self._fd, min(size, 1 << 20), 0)
        newline = head.find(b"\n")
        if newline < 0:  # a header without rows or newline (not written by us): rewrite it
            text = head
            self._header_len = self._header_room = self._end = 0
            columns = next(csv.reader([text.decode()]), [])
            self.close()
            self.path.unlink()
            self._rewrite(columns)
            return
        room = newline
        while room < len(head) and head[room : room + 1] == b"\n":
            room += 1
        columns = next(csv.reader([head[:newline].decode()]), [])
        self._header_len, self._header_room = newline, room
        self._register([unneutralize(c) for c in columns])
        self._end = size
        if size > room and os.pread(self._fd, 1, size - 1) != b"\n":
            if room > newline + 1:
                # Our own file (padding after the header): every row we write
                # ends in a newline, so this one was cut (a full disk, a crash
                # of the machine). Remove it: completing it would make a torn
                # row look valid, with a wrong last value.
                self._end = self._last_newline(room, size) + 1
                self.dropped_tail = size - self._end
                os.ftruncate(self._fd, self._end)
            else:  # a foreign csv whose last row merely lacks its newline: end it
                self._write_at(b"\n", size)
                self._end += 1

    def _last_newline(self, start: int, size: int) -> int:
        """Offset of the last newline in ``[start, size)``; ``start - 1`` when there is none."""
        assert self._fd is not None
        end = size
        while end > start:
            begin = max(start, end - (1 << 16))
            i = os.pread(self._fd, end - begin, begin).rfind(b"\n")
            if i >= 0:
                return begin + i
            end = begin
        return start - 1

    def _cleanup_temp(self) -> None:
        for stale in self.path.parent.glob(f".{self.path.name}.tmp-*"):
            try:
                pid = int(stale.name.rsplit("-", 1)[1])
            except ValueError:
                continue
            if pid == os.getpid() or not _pid_alive(pid):
                stale.unlink(missing_ok=True)

    def _write_at(self, data: bytes, offset: int) -> None:
        assert self._fd is not None
        view = memoryview(data)
        while view:
            written = os.pwrite(self._fd, view, offset)
            view = view[written:]
            offset += written


def _write_all(fd: int, data: bytes) -> None:
    """``os.write`` until all of ``data`` is written; a full disk raises (ENOSPC/EFBIG)."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written <= 0:
            raise OSError(errno.ENOSPC, "no progress writing")
        view = view[written:]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
