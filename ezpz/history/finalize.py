"""``finalize()``: turn a run's history into files, uploads and a closed tracker.

Stages, each logged with its wall time (``finalize [3/9] mplot: ...``):
ranks.h5 (collective when every rank is here), datasets, logs (metrics.jsonl
and the structured-log link), matplotlib plots, terminal plots, report,
uploads, tracker.finish(). Only rank 0 writes files; other ranks take part in
the per-rank HDF5 flush and return the same datasets. A failing plot, report
or upload is logged and never loses the datasets. See docs/finalize.md.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from ezpz.history import dataset as dsmod
from ezpz.history import ranks_h5

if TYPE_CHECKING:
    import xarray as xr

    from ezpz.history.core import History

logger = logging.getLogger(__name__)

TABLE_ROWS_ENV = "EZPZ_HISTORY_TABLE_ROWS"
DEFAULT_TABLE_ROWS = 100_000
_STAGES = ("ranks.h5", "datasets", "logs", "mplot", "tplot", "report", "upload", "finish")
T = TypeVar("T")


class _Progress:
    """One log line per stage with its wall time, so long finalizes show life."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.start = time.perf_counter()
        self.timings: dict[str, float] = {}

    def run(self, stage: str, fn: Callable[[], T], *, guard: bool = True) -> T | None:
        t0 = time.perf_counter()
        index = _STAGES.index(stage) + 1
        try:
            result = fn()
        except Exception:
            if not guard:
                raise
            logger.exception("finalize [%d/%d] %s failed; continuing", index, len(_STAGES), stage)
            result = None
        dt = time.perf_counter() - t0
        self.timings[stage] = dt
        if self.enabled:
            logger.info("finalize [%d/%d] %s: %.2fs", index, len(_STAGES), stage, dt)
        return result


def resolve_outdir(history: History, outdir: str | os.PathLike[str] | None) -> Path:
    """``outdir`` argument > ``History(outdir=...)`` > ``{report_dir}/{run_id}``."""
    if outdir is not None:
        return Path(outdir)
    if getattr(history, "outdir", None) is not None:
        return Path(history.outdir)
    return Path(history.report_dir) / str(history.run_id)


def build_datasets(history: History, run_name: str | None = None) -> dict[str, xr.Dataset]:
    """One dataset per group of ``history.store`` (every draw), keyed by group name."""
    out: dict[str, xr.Dataset] = {}
    for gname, g in history.store.groups.items():
        if len(g) == 0:
            continue
        attrs = dsmod.run_attrs(
            run_id=history.run_id,
            world_size=history.world_size,
            group=gname,
            config=history.config,
            run_name=run_name,
        )
        out[gname] = dsmod.group_dataset(g, attrs)
    return out


def write_datasets(datasets: dict[str, xr.Dataset], outdir: Path) -> dict[str, Path]:
    return {
        group: dsmod.write_dataset(ds, outdir / dsmod.group_file_name(group))
        for group, ds in datasets.items()
    }


def _write_ranks(history: History, outdir: Path, all_ranks: bool | None) -> Path | None:
    """The per-rank file; collective when every rank is in finalize. Every rank calls it."""
    if history.comm is None or history.world_size <= 1:
        return None
    flusher = ranks_h5.attach(history)
    assert flusher is not None
    comm = flusher.comm if flusher.comm is not None else history.comm
    tag = ranks_h5.run_tag(history.run_id)
    together = ranks_h5.agree_all_ranks(comm, history.rank, all_ranks, tag)
    dest = outdir / ranks_h5.RANKS_FILE
    if together:
        flusher.flush(final=True)
        published = flusher.publish(dest) if history.rank == 0 else None
        flusher.restart()
        return published
    if history.rank != 0:
        return None
    return flusher.write_local(dest)


def _is_ezpz_h5(path: Path) -> bool:
    """True for files finalize wrote (datasets carry ezpz_version, ranks.h5 its layout)."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return "ezpz_version" in f.attrs
    except OSError:
        return False


def remove_stale(outdir: Path, keep: set[Path]) -> list[Path]:
    """Delete ezpz HDF5 files in ``outdir`` that this finalize did not write.

    A re-run with other groups (or single-process after distributed) must not
    leave the earlier run's datasets next to the new ones. Files ezpz did not
    write are never touched.
    """
    removed = []
    keep_names = {p.name for p in keep}
    for path in sorted(outdir.glob("*.h5")):
        if path.name not in keep_names and path.is_file() and _is_ezpz_h5(path):
            path.unlink()
            removed.append(path)
    if removed:
        logger.info("finalize: removed stale %s", ", ".join(p.name for p in removed))
    return removed


def _replace_copy(src: Path, dest: Path) -> Path:
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return dest


def write_logs(jsonl_path: Path | None, outdir: Path) -> dict[str, Path]:
    """``metrics.jsonl`` (a copy) and ``{timestamp}-rank0.jsonl`` -> the run's JSONL."""
    out: dict[str, Path] = {}
    if jsonl_path is None or not Path(jsonl_path).is_file():
        logger.info("finalize: no JSONL log to copy (%s)", jsonl_path)
        return out
    src = Path(jsonl_path).resolve()
    dest = outdir / "metrics.jsonl"
    if dest.resolve() != src:
        out["metrics.jsonl"] = _replace_copy(src, dest)
    # One structured-log link per outdir: a re-run replaces the old one.
    for old in outdir.glob("*-rank0.jsonl"):
        if old.is_symlink():
            old.unlink()
    link = outdir / f"{time.strftime('%Y-%m-%d-%H%M%S')}-rank0.jsonl"
    try:
        target = os.path.relpath(src, outdir.resolve())
    except ValueError:  # another drive (Windows): absolute link
        target = str(src)
    try:
        link.symlink_to(target)
        out["log_link"] = link
    except OSError as exc:
        logger.warning("finalize: cannot link %s -> %s (%s)", link, target, exc)
    return out


def _plot_all(kind: str, datasets: dict[str, xr.Dataset], outdir: Path, **kw: Any) -> dict:
    if kind == "mplot":
        from ezpz.plot.mplot import plot_group
    else:
        from ezpz.plot.tplot import plot_group
    out: dict[str, list[Path]] = {}
    for group, ds in datasets.items():
        try:
            out[group] = list(plot_group(ds, outdir, group=group, **kw))
        except Exception:
            logger.exception("finalize: %s of group %r failed; other groups go on", kind, group)
            out[group] = []
    return out


def _table_rows_cap() -> int:
    raw = os.environ.get(TABLE_ROWS_ENV, "").strip()
    try:
        return int(raw) if raw else DEFAULT_TABLE_ROWS
    except ValueError:
        logger.warning("%s=%r is not an integer; using %d", TABLE_ROWS_ENV, raw, DEFAULT_TABLE_ROWS)
        return DEFAULT_TABLE_ROWS


def history_table(ds: xr.Dataset, cap: int) -> tuple[list[str], list[list[Any]]]:
    """``step`` plus every scalar metric (by its logged key), at most ``cap`` rows (even stride)."""
    scalar = [v for v in ds.data_vars if ds[v].ndim == 1]
    columns = ["step", *(str(ds[v].attrs.get("key", v)) for v in scalar)]
    n = ds.sizes.get("draw", 0)
    idx = np.arange(n)
    if cap > 0 and n > cap:
        idx = np.unique(np.linspace(0, n - 1, cap).round().astype(np.int64))
    matrix = np.column_stack(
        [ds["step"].values[idx].astype(np.float64)] + [ds[v].values[idx] for v in scalar]
    )
    rows = matrix.tolist()
    for row in rows:  # steps are integers
        row[0] = int(row[0])
    return columns, rows


def _tracker_active(tracker: Any) -> bool:
    if tracker is None or type(tracker).__name__ == "NullTracker":
        return False
    backends = getattr(tracker, "backends", None)
    return backends is None or bool(backends)


def upload(
    tracker: Any,
    datasets: dict[str, xr.Dataset],
    mplots: dict[str, list[Path]],
    artifacts: list[Path],
) -> None:
    """History table(s), plot images and artifacts to the backends (rank 0)."""
    if not _tracker_active(tracker):
        return
    cap = _table_rows_cap()
    for group, ds in datasets.items():
        columns, rows = history_table(ds, cap)
        tracker.log_table("history" if len(datasets) == 1 else f"history/{group}", columns, rows)
    for group, paths in mplots.items():
        for path in paths:
            key = f"plots/{group}/{path.stem}" if group else f"plots/{path.stem}"
            tracker.log_image(key, str(path), caption=path.stem)
    log_artifact = getattr(tracker, "log_artifact", None)
    if log_artifact is not None:
        for path in artifacts:
            if path.exists():
                log_artifact(str(path))


def finalize(
    history: History,
    outdir: str | os.PathLike[str] | None = None,
    run_name: str | None = None,
    warmup: float = 0.0,
    num_chains: int = 128,
    *,
    all_ranks: bool | None = None,
    plot: bool = True,
    report: bool | None = None,
    progress: bool = True,
    **kwargs: Any,
) -> xr.Dataset | dict[str, xr.Dataset]:
    """Write datasets, per-rank HDF5, plots and report; upload; finish the tracker.

    ``all_ranks``: None (default) detects whether every rank called finalize
    (waits ``EZPZ_FINALIZE_WAIT`` s for them); True: every rank calls it;
    False: only rank 0 does. ``plot=False`` skips both plot kinds (rebuild them
    later with ``ezpz-history report``). ``report`` defaults to
    ``history.report_enabled``. Returns ``{group: Dataset}`` for several
    groups, one Dataset for one.
    """
    import xarray as xr

    if kwargs:
        logger.warning("finalize: ignoring unknown arguments %s", sorted(kwargs))
    dsmod.warmup_count(10, warmup)  # bad warmup: fail before any work
    if (
        isinstance(num_chains, bool)
        or not isinstance(num_chains, int | np.integer)
        or num_chains < 1
    ):
        raise ValueError(f"num_chains must be a positive integer, got {num_chains!r}")
    if report is None:
        report = bool(getattr(history, "report_enabled", True))
    rank = int(getattr(history, "rank", 0))
    out = resolve_outdir(history, outdir)
    steps = _Progress(enabled=progress and rank == 0)
    tracker = getattr(history, "tracker", None)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        set_outdir = getattr(tracker, "set_outdir", None)
        if set_outdir is not None:
            try:
                set_outdir(out)
            except Exception:
                logger.exception("finalize: tracker.set_outdir(%s) failed", out)
        logger.info("finalize: writing to %s", out)

    # Every rank: the per-rank file first, so other ranks are not kept waiting.
    ranks_path = steps.run("ranks.h5", lambda: _write_ranks(history, out, all_ranks))
    datasets = build_datasets(history, run_name)
    if rank != 0:
        _finish(tracker, steps)
        return _result(datasets, xr)

    files = steps.run("datasets", lambda: write_datasets(datasets, out), guard=False) or {}
    try:
        remove_stale(out, set(files.values()) | ({ranks_path} if ranks_path else set()))
    except Exception:
        logger.exception("finalize: could not remove stale datasets in %s", out)
    logs = steps.run("logs", lambda: write_logs(getattr(history, "jsonl_path", None), out)) or {}
    mplots: dict[str, list[Path]] = {}
    tplots: dict[str, list[Path]] = {}
    if plot:
        kw = {"warmup": warmup}
        mplots = (
            steps.run(
                "mplot", lambda: _plot_all("mplot", datasets, out, num_chains=num_chains, **kw)
            )
            or {}
        )
        tplots = steps.run("tplot", lambda: _plot_all("tplot", datasets, out, **kw)) or {}
    report_path = None
    if report:
        report_path = steps.run(
            "report",
            lambda: _write_report(history, out, run_name, datasets, mplots, tplots, warmup, files),
        )
    artifacts = [*logs.values(), *files.values()]
    artifacts += [p for p in (report_path, ranks_path) if p is not None]
    steps.run("upload", lambda: upload(tracker, datasets, mplots, artifacts))
    _finish(tracker, steps)
    total = time.perf_counter() - steps.start
    logger.info("finalize: done in %.2fs -> %s", total, out)
    return _result(datasets, xr)


def _finish(tracker: Any, steps: _Progress) -> None:
    finish = getattr(tracker, "finish", None)
    if finish is not None:
        steps.run("finish", finish)


def _result(datasets: dict[str, xr.Dataset], xr: Any) -> xr.Dataset | dict[str, xr.Dataset]:
    if not datasets:
        logger.warning("finalize: nothing was recorded; returning an empty Dataset")
        return xr.Dataset()
    if len(datasets) == 1:
        return next(iter(datasets.values()))
    return datasets


def _write_report(
    history: History,
    outdir: Path,
    run_name: str | None,
    datasets: dict[str, xr.Dataset],
    mplots: dict[str, list[Path]],
    tplots: dict[str, list[Path]],
    warmup: float,
    files: dict[str, Path],
) -> Path:
    from ezpz import __version__
    from ezpz.history.report import write_report

    meta = {
        "run_id": history.run_id,
        "run_name": run_name or history.run_id,
        "project": getattr(history, "project_name", None),
        "world_size": history.world_size,
        "ezpz_version": __version__,
        "outdir": str(outdir),
        "jsonl": str(getattr(history, "jsonl_path", "")),
        "datasets": ", ".join(p.name for p in files.values()),
    }
    return write_report(
        outdir,
        meta={k: v for k, v in meta.items() if v not in (None, "")},
        config=dict(history.config or {}),
        datasets=datasets,
        mplots=mplots,
        tplots=tplots,
        warmup=warmup,
    )
