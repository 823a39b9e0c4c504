"""One live run per output directory: a lock file in ``outdir``.

Two ``History`` objects writing into one ``outdir`` at the same time corrupt
each other's csv and datasets (issue 12 item 10), so the run that gets there
second is refused with an error naming the directory and the run holding it.
Sequential runs into one ``outdir`` (a re-run, a resumed run) are fine: the
lock is released by ``close()``/``finalize()`` and a lock whose process is
gone is taken over.

The lock is ``{outdir}/.ezpz.lock``, created with ``O_CREAT | O_EXCL`` (atomic
on local file systems and on NFSv3+/Lustre), holding one JSON object:
``{"run_id", "host", "pid", "start", "time"}``. It is *stale*, and taken over
with a warning, when

* it names this run's ``run_id`` (``History(resume=...)`` continues a run);
* it was written on this host by a process that no longer exists (or whose
  pid now belongs to another process: ``start`` is the process start time
  from ``/proc``);
* it cannot be parsed and is older than a minute (a writer killed mid-write).

A lock held by a process on another host cannot be checked from here: the
error says so and names the file to delete if that run is really gone.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from pathlib import Path
from typing import Any

__all__ = ["LOCK_NAME", "OutdirInUseError", "OutdirLock"]

logger = logging.getLogger(__name__)

LOCK_NAME = ".ezpz.lock"
_UNPARSEABLE_STALE_S = 60.0


class OutdirInUseError(RuntimeError):
    """Another live run writes into this output directory."""


def _start_time(pid: int) -> str | None:
    """The process start time (clock ticks since boot) from /proc; None elsewhere."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 22; the command name (field 2) may hold spaces, so split after its ")".
    fields = stat.rpartition(")")[2].split()
    return fields[19] if len(fields) > 19 else None


def _alive(pid: int, start: str | None) -> bool:
    if pid == os.getpid():
        return True  # another History in this very process
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    now_start = _start_time(pid)
    return start is None or now_start is None or now_start == start


class OutdirLock:
    """The lock of one run on one output directory (rank 0 only)."""

    def __init__(self, outdir: Path, run_id: str) -> None:
        self.outdir = Path(outdir)
        self.path = self.outdir / LOCK_NAME
        self.run_id = str(run_id)
        self._held = False
        self._content = b""

    @property
    def held(self) -> bool:
        return self._held

    def _payload(self) -> bytes:
        info = {
            "run_id": self.run_id,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "start": _start_time(os.getpid()),
            "time": time.time(),
        }
        return json.dumps(info, sort_keys=True).encode()

    def acquire(self) -> OutdirLock:
        """Take the lock or raise :class:`OutdirInUseError` (``OSError`` if unwritable)."""
        if self._held:
            return self
        self.outdir.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            if self._create():
                return self
            holder, raw = self._read()
            why = self._stale_reason(holder, raw)
            if why is None:
                raise OutdirInUseError(self._in_use_message(holder))
            if not self._remove_if_unchanged(raw):
                continue  # it changed under us: look again
            if why != "this run":
                logger.warning("ezpz: %s: taking over a stale lock (%s)", self.path, why)
        holder, _ = self._read()
        raise OutdirInUseError(self._in_use_message(holder))

    def _create(self) -> bool:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(self.path, flags, 0o666)
        except FileExistsError:
            return False
        payload = self._payload()
        try:
            os.write(fd, payload)
        finally:
            os.close(fd)
        self._held, self._content = True, payload
        return True

    def _read(self) -> tuple[dict[str, Any] | None, bytes | None]:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None, None
        except OSError:
            return None, b""
        try:
            holder = json.loads(raw)
        except ValueError:
            return None, raw
        return (holder if isinstance(holder, dict) else None), raw

    def _stale_reason(self, holder: dict[str, Any] | None, raw: bytes | None) -> str | None:
        """Why the existing lock may be taken over; None while its run may be alive."""
        if raw is None:
            return "gone"
        if holder is None:
            try:
                age = time.time() - self.path.stat().st_mtime
            except OSError:
                return "gone"
            return "unreadable lock" if age > _UNPARSEABLE_STALE_S else None
        if holder.get("run_id") == self.run_id:
            return "this run"
        if holder.get("host") != socket.gethostname():
            return None  # cannot check a process on another host
        try:
            pid = int(holder.get("pid", -1))
        except (TypeError, ValueError):
            return "unreadable lock"
        if pid <= 0:
            return "unreadable lock"
        start = holder.get("start")
        if not _alive(pid, start if isinstance(start, str) else None):
            return f"process {pid} of run {holder.get('run_id')} is gone"
        return None

    def _remove_if_unchanged(self, raw: bytes | None) -> bool:
        if raw is None:
            return True
        try:
            if self.path.read_bytes() != raw:
                return False
            self.path.unlink()
        except FileNotFoundError:
            pass
        except OSError:
            return False
        return True

    def _in_use_message(self, holder: dict[str, Any] | None) -> str:
        who = (
            f"run {holder.get('run_id')} (pid {holder.get('pid')} on {holder.get('host')})"
            if holder
            else "another run"
        )
        return (
            f"ezpz: output directory {self.outdir} is in use by {who}: two runs writing "
            f"into one outdir would corrupt each other's files. Give this run another "
            f"outdir=, or, if that run is no longer running, delete {self.path}."
        )

    def release(self) -> None:
        """Remove the lock if it is still ours; never raises."""
        if not self._held:
            return
        self._held = False
        try:
            if self.path.read_bytes() == self._content:
                self.path.unlink()
        except OSError:
            pass
