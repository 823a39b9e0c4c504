"""The ``csv`` backend: ``metrics.csv``, ``config.json`` and tables as CSV files.

Rank 0 writes; on other ranks every method returns at once and nothing is
kept. See ``docs/tracker.md`` for the file format.

- The ``step`` column always holds the step. A metric that is itself named
  ``step`` goes to the column ``step_metric`` (``step_metric_`` ... if that
  name is taken too), never over the step.
- A row is written whole or not at all. When the disk is full (``ENOSPC``,
  ``EFBIG`` under ``RLIMIT_FSIZE``, ``EDQUOT``) ``metrics.csv`` is cut back to
  its last whole row and the backend stops, with one warning; the other
  backends and the JSONL carry on.
- Cells and header cells starting with ``=``, ``+``, ``-``, ``@`` get a
  leading ``'`` (spreadsheet formula injection); numbers are left alone.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ezpz._files import atomic_write_text
from ezpz._redact import redact_config
from ezpz.tracker.base import TrackerBackend
from ezpz.tracker.csv_table import GrowingCsv, csv_field, unneutralize

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.csv"
CONFIG_FILE = "config.json"
STEP_COLUMN = "step"
#: the column of a metric named ``step`` (the ``step`` column keeps the real step)
STEP_METRIC_COLUMN = "step_metric"
DEFAULT_OUTDIR = "outputs"


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


def history_table_files(groups: Sequence[str]) -> list[str]:
    """The file names finalize's history tables get: ``training_history.csv`` for one group,
    ``training_history_<group>.csv`` for each of several."""
    groups = list(groups)
    keys = ["training_history"] if len(groups) == 1 else [f"training_history/{g}" for g in groups]
    return [table_filename(k) for k in keys]


def _step_metric_column(metrics: Mapping[str, Any]) -> str:
    name = STEP_METRIC_COLUMN
    while name in metrics:
        name += "_"
    return name


class CSVBackend(TrackerBackend):
    """Metrics to ``{outdir}/metrics.csv``: one row per ``log()`` call (``commit`` or not)."""

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
        self.stopped: str | None = None  # why the backend stopped writing (disk full ...)
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
            if self._table.dropped_tail:
                logger.warning(
                    "csv backend: removed an incomplete last row (%d bytes, never written "
                    "whole) from %s before appending",
                    self._table.dropped_tail,
                    self.metrics_path,
                )
            logger.info("csv backend: writing %s", self.metrics_path)
        return self._table

    def _stop(self, what: str, exc: OSError) -> None:
        """Stop writing after a failed write; one warning says what is kept."""
        self.stopped = f"{what}: {exc}"
        if self._table is not None:
            try:
                self._table.close()
            except OSError:
                pass
            self._table = None
        logger.warning(
            "csv backend stopped: could not write %s (%s). %s keeps the rows written "
            "before, each whole; History (and the datasets finalize() writes) and the "
            "other backends still get every step",
            what,
            exc,
            self.metrics_path,
        )

    def _write(self, what: str, fn: Any, *args: Any) -> None:
        try:
            fn(*args)
        except OSError as exc:
            self._stop(what, exc)

    def log(self, metrics: Mapping[str, Any], step: int | None = None, commit: bool = True) -> None:
        if self.rank != 0 or self.stopped is not None:
            return
        if STEP_COLUMN in metrics:  # a metric named "step" never overwrites the step
            metrics = {
                (_step_metric_column(metrics) if k == STEP_COLUMN else k): v
                for k, v in metrics.items()
            }
        # One row per call, commit or not (spec: one row per update()): a
        # commit=False row is not merged into the next one, so a step's
        # values never land on another step's row. W&B keeps its own meaning.
        row: dict[str, Any] = {STEP_COLUMN: step}
        row.update(metrics)
        self._write(METRICS_FILE, lambda: self._metrics().append(row))

    def log_config(self, config: Mapping[str, Any]) -> None:
        if self.rank != 0:
            return
        self._config.update(redact_config(dict(config)))  # ezpz._redact: one policy
        if self.stopped is not None:
            return
        text = json.dumps(self._config, indent=2, sort_keys=True, default=str) + "\n"
        self._write(CONFIG_FILE, atomic_write_text, self.config_path, text)

    def log_table(self, key: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        """``{outdir}/training_history.csv`` for finalize's table (see ``table_filename``)."""
        if self.rank != 0 or self.stopped is not None:
            return
        names = [str(c) for c in columns]
        if STEP_COLUMN in names[1:]:  # finalize's table: "step" first, a metric "step" later
            taken = dict.fromkeys(names)
            names = names[:1] + [
                _step_metric_column(taken) if c == STEP_COLUMN else c for c in names[1:]
            ]
        lines = [",".join(csv_field(c) for c in names)]
        lines.extend(",".join(csv_field(v) for v in row) for row in rows)
        path = self.outdir / table_filename(key)
        self._write(path.name, atomic_write_text, path, "\n".join(lines) + "\n")

    def set_outdir(self, outdir: str | os.PathLike[str]) -> None:
        """Continue in ``outdir``; rows written so far are copied there (the old files stay)."""
        new = Path(outdir)
        if self.rank != 0 or new.resolve() == self.outdir.resolve():
            return
        if self.stopped is not None:  # a stopped backend writes nothing anywhere
            self.outdir = new
            return
        old_metrics = self.metrics_path if self._table is not None else None
        if self._table is not None:
            self._table.close()
            self._table = None
        self.outdir = new
        if old_metrics is not None and old_metrics.exists():
            self._write(METRICS_FILE, self._copy_rows, old_metrics)
        if self._config:
            self.log_config({})

    def _copy_rows(self, old_metrics: Path) -> None:
        table = self._metrics()
        with open(old_metrics, newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                # a row shorter than the header (trailing empty cells) reads as None
                cells = {
                    unneutralize(k): unneutralize(v)
                    for k, v in row.items()
                    if k is not None and v is not None
                }
                table.append({k: v for k, v in cells.items() if v != ""})

    def supersede(self, step: int) -> None:
        """A resumed run logs ``step`` again: drop the rows from ``step`` on (ezpz.tracker.csv_resume)."""
        if self.rank != 0 or self.stopped is not None:
            return
        from ezpz.tracker.csv_resume import truncate_from_step

        if self._table is not None:
            self._table.close()
            self._table = None  # reopened (continued) by the next row
        truncate_from_step(self.metrics_path, step)

    def finish(self) -> None:
        if self._pending and self.rank == 0:  # an uncommitted row is still a row
            self.log({}, commit=True)
        if self._table is not None:
            self._table.close()
            self._table = None
