"""The ``csv`` backend: ``metrics.csv``, ``config.json`` and tables as CSV files.

Rank 0 writes; on other ranks every method returns at once and nothing is
kept. See ``docs/tracker.md`` for the file format.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ezpz.tracker.base import TrackerBackend
from ezpz.tracker.csv_table import GrowingCsv, csv_field

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.csv"
CONFIG_FILE = "config.json"
STEP_COLUMN = "step"
DEFAULT_OUTDIR = "outputs"


def _write_atomic(path: Path, text: str) -> None:
    """Write to a temporary name, then rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def table_filename(key: str) -> str:
    """``log_table`` key -> file name: finalize's ``history`` table is ``training_history.csv``.

    ``history/<group>`` (several groups) -> ``training_history_<group>.csv``;
    any other key -> ``<key>.csv``, with characters unsafe in file names as ``_``.
    """
    key = key.strip()
    if key == "history" or key.startswith("history/"):
        key = "training_" + key
    cleaned = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in key)
    return (cleaned.strip(".") or "table") + ".csv"


class CSVBackend(TrackerBackend):
    """Metrics to ``{outdir}/metrics.csv``: one row per committed ``log()`` call."""

    name = "csv"

    def __init__(
        self,
        *,
        outdir: str | os.PathLike[str] | None = None,
        config: Mapping[str, Any] | None = None,
        rank: int = 0,
        **_: Any,
    ) -> None:
        self.rank = rank
        self.outdir = Path(outdir if outdir is not None else DEFAULT_OUTDIR)
        self._table: GrowingCsv | None = None
        self._pending: dict[str, Any] = {}
        self._pending_step: int | None = None
        self._config: dict[str, Any] = {}
        if config and rank == 0:
            self.log_config(config)

    @property
    def metrics_path(self) -> Path:
        return self.outdir / METRICS_FILE

    @property
    def config_path(self) -> Path:
        return self.outdir / CONFIG_FILE

    def _metrics(self) -> GrowingCsv:
        if self._table is None:
            self._table = GrowingCsv(self.metrics_path, first_columns=(STEP_COLUMN,))
            logger.info("csv backend: writing %s", self.metrics_path)
        return self._table

    def log(self, metrics: Mapping[str, Any], step: int | None = None, commit: bool = True) -> None:
        if self.rank != 0:
            return
        # commit=False (W&B's meaning): merge into the row the next commit writes.
        self._pending.update(metrics)
        if step is not None:
            self._pending_step = step
        if not commit:
            return
        row: dict[str, Any] = {STEP_COLUMN: self._pending_step}
        row.update(self._pending)
        self._pending, self._pending_step = {}, None
        self._metrics().append(row)

    def log_config(self, config: Mapping[str, Any]) -> None:
        if self.rank != 0:
            return
        self._config.update(config)
        _write_atomic(
            self.config_path,
            json.dumps(self._config, indent=2, sort_keys=True, default=str) + "\n",
        )

    def log_table(self, key: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        """``{outdir}/training_history.csv`` for finalize's table (see ``table_filename``)."""
        if self.rank != 0:
            return
        lines = [",".join(csv_field(str(c)) for c in columns)]
        lines.extend(",".join(csv_field(v) for v in row) for row in rows)
        _write_atomic(self.outdir / table_filename(key), "\n".join(lines) + "\n")

    def set_outdir(self, outdir: str | os.PathLike[str]) -> None:
        """Continue in ``outdir``; rows written so far are copied there (the old files stay)."""
        new = Path(outdir)
        if self.rank != 0 or new.resolve() == self.outdir.resolve():
            return
        old_metrics = self.metrics_path if self._table is not None else None
        if self._table is not None:
            self._table.close()
            self._table = None
        self.outdir = new
        if old_metrics is not None and old_metrics.exists():
            table = self._metrics()
            with open(old_metrics, newline="", encoding="utf-8") as fh:
                for row in csv.DictReader(fh):
                    table.append({k: v for k, v in row.items() if k is not None and v != ""})
        if self._config:
            self.log_config({})

    def finish(self) -> None:
        if self._pending and self.rank == 0:  # an uncommitted row is still a row
            self.log({}, commit=True)
        if self._table is not None:
            self._table.close()
            self._table = None
