"""``finalize()``: turn a run's history into files, uploads and a closed tracker.

The 8 stages, each logged with its wall time (``finalize [4/8] mplot: ...``):
ranks.h5 (collective when every rank is here), datasets, logs (metrics.jsonl
and the structured-log link), matplotlib plots, terminal plots, report,
uploads, tracker.finish(). Only rank 0 writes files; other ranks take part in
the per-rank HDF5 flush and return the same datasets. A failing plot, report
or upload is logged and never loses the datasets. See docs/finalize.md.

``History.finalize()`` calls :func:`finalize` with what it owns: the run's
:class:`~ezpz.history.runinfo.RunInfo`, its store, its tracker and (for a
distributed run) its per-rank flusher. Nothing here knows ``History``.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from ezpz._env import env_int
from ezpz._files import atomic_path
from ezpz.history import dataset as dsmod
from ezpz.history.ranks_h5 import RANKS_FILE

if TYPE_CHECKING:
    import xarray as xr

    from ezpz.history.ranks_h5 import RankFlusher
    from ezpz.history.runinfo import RunInfo
    from ezpz.history.store import HistoryStore
    from ezpz.tracker import Tracker

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


def resolve_outdir(run: RunInfo, outdir: str | os.PathLike[str] | None) -> Path:
    """``outdir`` argument > ``History(outdir=...)`` > ``{report_dir}/{run_id}``."""
    return Path(outdir) if outdir is not None else run.default_outdir()


def build_datasets(run: RunInfo, store: HistoryStore) -> dict[str, xr.Dataset]:
    """One dataset per group of ``store`` (every draw), keyed by group name."""
    out: dict[str, xr.Dataset] = {}
    for gname, g in store.groups.items():
        if len(g) == 0:
            continue
        attrs = dsmod.run_attrs(
            run_id=run.run_id,
            world_size=run.world_size,
            group=gname,
            config=run.config,
            run_name=run.run_name,
        )
        out[gname] = dsmod.group_dataset(g, attrs)
    return out


def dataset_file_name(group: str, stem: str | None, n_groups: int) -> str:
    """``train.h5`` (``history.h5`` unprefixed); with ``stem`` (ezpz 0.26's
    ``dataset_fname``): ``{stem}.h5`` for one group or the unprefixed one,
    ``{stem}-{group}.h5`` for each of several."""
    if stem is None:
        return dsmod.group_file_name(group)
    stem = dsmod.safe_name(Path(stem).stem if stem.endswith((".h5", ".nc")) else stem)
    if n_groups == 1 or not group:
        return f"{stem}.h5"
    return f"{stem}-{dsmod.safe_name(group)}.h5"


def write_datasets(
    datasets: dict[str, xr.Dataset], outdir: Path, stem: str | None = None
) -> dict[str, Path]:
    return {
        group: dsmod.write_dataset(ds, outdir / dataset_file_name(group, stem, len(datasets)))
        for group, ds in datasets.items()
    }


def _write_ranks(ranks: RankFlusher | None, outdir: Path, all_ranks: bool | None) -> Path | None:
    """``ranks.h5`` of a distributed run (every rank calls it); None when single-process."""
    return None if ranks is None else ranks.write_final(outdir / RANKS_FILE, all_ranks)


def _ezpz_h5_run(path: Path) -> str | None:
    """The ``run_id`` of an HDF5 file finalize wrote (datasets and ranks.h5 carry
    ``ezpz_version``); None for any other file."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            if "ezpz_version" not in f.attrs:
                return None
            run_id = f.attrs.get("run_id", "")
    except OSError:
        return None
    return run_id.decode() if isinstance(run_id, bytes) else str(run_id)


def remove_stale(outdir: Path, keep: set[Path], run_id: str) -> list[Path]:
    """Delete this run's ezpz HDF5 files in ``outdir`` that this finalize did not write.

    A repeated or resumed finalize of run ``run_id`` with other groups (or
    single-process after distributed) must not leave its earlier datasets
    next to the new ones. Files of another run (their ``run_id`` attribute
    differs) are kept and named in a warning; files ezpz did not write are
    never touched.
    """
    removed, others = [], []
    keep_names = {p.name for p in keep}
    for path in sorted(outdir.glob("*.h5")):
        if path.name in keep_names or not path.is_file():
            continue
        owner = _ezpz_h5_run(path)
        if owner is None:
            continue
        if owner == run_id:
            path.unlink()
            removed.append(path)
        else:
            others.append(f"{path.name} (run {owner})")
    if removed:
        logger.info("finalize: removed stale %s", ", ".join(p.name for p in removed))
    if others:
        logger.warning(
            "finalize: %s also holds files of other runs, left as they are: %s",
            outdir,
            ", ".join(others),
        )
    return removed


def _replace_copy(src: Path, dest: Path) -> Path:
    with atomic_path(dest) as tmp:
        shutil.copyfile(src, tmp)
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


def _plot_all(
    kind: str, datasets: dict[str, xr.Dataset], outdir: Path, **kw: Any
) -> dict[str, list[Path]]:
    plot_group: Callable[..., list[Path]]
    if kind == "mplot":
        from ezpz.plot import mplot

        plot_group = mplot.plot_group
    else:
        from ezpz.plot import tplot

        plot_group = tplot.plot_group
    out: dict[str, list[Path]] = {}
    for group, ds in datasets.items():
        try:
            out[group] = list(plot_group(ds, outdir, group=group, **kw))
        except Exception:
            logger.exception("finalize: %s of group %r failed; other groups go on", kind, group)
            out[group] = []
    return out


def _table_rows_cap() -> int:
    """``EZPZ_HISTORY_TABLE_ROWS``: rows of the uploaded history table (<= 0: all)."""
    return env_int(TABLE_ROWS_ENV, DEFAULT_TABLE_ROWS)


def history_table(ds: xr.Dataset, cap: int) -> tuple[list[str], list[list[Any]]]:
    """``step`` plus every scalar metric (by its logged key), at most ``cap`` rows (even stride)."""
    scalar = [v for v in ds.data_vars if ds[v].ndim == 1]
    columns = ["step", *(str(ds[v].attrs.get("key", v)) for v in scalar)]
    n = ds.sizes.get("draw", 0)
    idx = np.arange(n)
    if cap > 0 and n > cap:
        idx = np.unique(np.linspace(0, n - 1, cap).round().astype(np.int64))
    steps = ds["step"].values[idx].astype(np.int64).tolist()  # exact: never via float64
    if not scalar:
        return columns, [[step] for step in steps]
    matrix = np.column_stack([ds[v].values[idx] for v in scalar]).tolist()
    return columns, [[step, *row] for step, row in zip(steps, matrix, strict=True)]


def upload(
    tracker: Tracker,
    datasets: dict[str, xr.Dataset],
    mplots: dict[str, list[Path]],
    artifacts: list[Path],
) -> None:
    """History table(s), plot images and artifacts to the backends (rank 0)."""
    if not tracker.backends:  # nothing would receive them: skip building the tables
        return
    cap = _table_rows_cap()
    for group, ds in datasets.items():
        columns, rows = history_table(ds, cap)
        key = "training_history" if len(datasets) == 1 else f"training_history/{group}"
        tracker.log_table(key, columns, rows)
    for group, paths in mplots.items():
        for path in paths:
            key = f"plots/{group}/{path.stem}" if group else f"plots/{path.stem}"
            tracker.log_image(key, str(path), caption=path.stem)
    for path in artifacts:
        if path.exists():
            tracker.log_artifact(str(path))


def finalize(
    run: RunInfo,
    store: HistoryStore,
    tracker: Tracker,
    *,
    ranks: RankFlusher | None = None,
    outdir: str | os.PathLike[str] | None = None,
    warmup: float = 0.0,
    num_chains: int = 128,
    all_ranks: bool | None = None,
    plot: bool = True,
    report: bool = True,
    progress: bool = True,
    save: bool = True,
    dataset_fname: str | None = None,
    title: str | None = None,
    append_tplot: bool = False,
    tplot_type: str | None = None,
    env_info: Mapping[str, Any] | None = None,
    verbose: bool = False,
    timings: bool | None = None,
    **kwargs: Any,
) -> xr.Dataset | dict[str, xr.Dataset]:
    """Write datasets, per-rank HDF5, plots and report; upload; finish the tracker.

    ezpz 0.26's keywords (docs/migrating.md): ``save=False`` writes no
    datasets, ``ranks.h5`` included (they are still returned); ``dataset_fname`` names the dataset
    files (``{name}.h5``, ``{name}-{group}.h5``); ``title`` goes above every
    PNG; ``append_tplot`` appends text plots to existing files; ``tplot_type``
    (``line``/``hist``) overrides ``EZPZ_TPLOT_TYPE``; ``env_info`` adds rows
    to the report's environment table; ``verbose`` logs every file written;
    ``timings`` is ``progress`` (the per-stage wall-time lines).

    ``ranks``: the per-rank flusher of a distributed run (None: no ranks.h5).
    ``outdir``: None uses :meth:`RunInfo.default_outdir`. ``all_ranks``: None
    (default) detects whether every rank called finalize (waits
    ``EZPZ_FINALIZE_WAIT`` s for them); True: every rank calls it; False: only
    rank 0 does. ``plot=False`` skips both plot kinds (rebuild them later with
    ``ezpz-history report``). Returns ``{group: Dataset}`` for several groups,
    one Dataset for one.
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
    if timings is not None:
        progress = bool(timings)
    rank = run.rank
    out = resolve_outdir(run, outdir)
    steps = _Progress(enabled=progress and rank == 0)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        try:
            tracker.set_outdir(out)
        except Exception:
            logger.exception("finalize: tracker.set_outdir(%s) failed", out)
        logger.info("finalize: writing to %s", out)

    # Every rank: the per-rank file first, so other ranks are not kept waiting.
    # save=False (ezpz 0.26) writes no datasets, the per-rank one included.
    ranks_path = (
        steps.run("ranks.h5", lambda: _write_ranks(ranks, out, all_ranks)) if save else None
    )
    datasets = build_datasets(run, store)
    if rank != 0:
        _finish(tracker, steps)
        return _result(datasets, xr)

    files: dict[str, Path] = {}
    if save:
        files = (
            steps.run("datasets", lambda: write_datasets(datasets, out, dataset_fname), guard=False)
            or {}
        )
        try:
            keep = set(files.values()) | ({ranks_path} if ranks_path else set())
            remove_stale(out, keep, run.run_id)
        except Exception:
            logger.exception("finalize: could not remove stale datasets in %s", out)
    logs = steps.run("logs", lambda: write_logs(run.jsonl_path, out)) or {}
    mplots: dict[str, list[Path]] = {}
    tplots: dict[str, list[Path]] = {}
    if plot:
        kw = {"warmup": warmup}
        mkw = {"num_chains": num_chains, "title": title, **kw}
        mplots = steps.run("mplot", lambda: _plot_all("mplot", datasets, out, **mkw)) or {}
        tkw = {"plot_type": tplot_type, "append": append_tplot, **kw}
        tplots = steps.run("tplot", lambda: _plot_all("tplot", datasets, out, **tkw)) or {}
    report_path = None
    if report:
        report_path = steps.run(
            "report",
            lambda: _write_report(
                run,
                out,
                datasets,
                mplots,
                tplots,
                warmup,
                files,
                _csv_tables(tracker, datasets),
                _run_links(tracker),
                env_info,
            ),
        )
    artifacts = [*logs.values(), *files.values()]
    artifacts += [p for p in (report_path, ranks_path) if p is not None]
    steps.run("upload", lambda: upload(tracker, datasets, mplots, artifacts))
    if verbose:
        written = [*artifacts, *(p for ps in mplots.values() for p in ps)]
        written += [p for ps in tplots.values() for p in ps]
        for path in written:
            logger.info("finalize: wrote %s", path)
    _finish(tracker, steps)
    total = time.perf_counter() - steps.start
    logger.info("finalize: done in %.2fs -> %s", total, out)
    return _result(datasets, xr)


def _finish(tracker: Tracker, steps: _Progress) -> None:
    steps.run("finish", tracker.finish)


def _result(datasets: dict[str, xr.Dataset], xarray: Any) -> xr.Dataset | dict[str, xr.Dataset]:
    if not datasets:
        logger.warning("finalize: nothing was recorded; returning an empty Dataset")
        empty: xr.Dataset = xarray.Dataset()
        return empty
    if len(datasets) == 1:
        return next(iter(datasets.values()))
    return datasets


def _csv_tables(tracker: Tracker, datasets: dict[str, xr.Dataset]) -> list[str]:
    """The history-table files the csv backend writes after the report (listed in it)."""
    if not datasets or tracker.get_backend("csv") is None:
        return []
    from ezpz.tracker.csv_backend import history_table_files

    return history_table_files(list(datasets))


def _run_links(tracker: Tracker) -> dict[str, str]:
    """The wandb and MLflow runs this run logs to (ids, and the URL where known)."""
    links: dict[str, str] = {}
    wandb_run = getattr(tracker.get_backend("wandb"), "run", None)
    if wandb_run is not None:
        url = getattr(wandb_run, "url", None)
        links["wandb_run"] = f"{wandb_run.id} ({url})" if url else str(wandb_run.id)
    mlflow = tracker.get_backend("mlflow")
    mlflow_run_id = getattr(mlflow, "run_id", None)
    if mlflow is not None and mlflow_run_id:
        links["mlflow_run"] = f"{mlflow_run_id} ({getattr(mlflow, 'tracking_uri', '')})"
    return links


def _segments(run: RunInfo) -> str | None:
    """The jobs this run spanned (ezpz.history.resume), for the report."""
    if run.jsonl_path is None or not Path(run.jsonl_path).is_file():
        return None
    from ezpz.history.resume import segments, segments_markdown

    segs = segments(run.jsonl_path, open_label="finalized", open_end=time.time())
    return segments_markdown(segs) or None


def _write_report(
    run: RunInfo,
    outdir: Path,
    datasets: dict[str, xr.Dataset],
    mplots: dict[str, list[Path]],
    tplots: dict[str, list[Path]],
    warmup: float,
    files: dict[str, Path],
    pending_files: list[str] | None = None,
    links: dict[str, str] | None = None,
    environment: Mapping[str, Any] | None = None,
) -> Path:
    from ezpz import __version__
    from ezpz.history.report import write_report

    meta = {
        "run_id": run.run_id,
        "run_name": run.display_name,
        "project": run.project_name,
        "world_size": run.world_size,
        "ezpz_version": __version__,
        "outdir": str(outdir),
        "jsonl": str(run.jsonl_path or ""),
        "datasets": ", ".join(p.name for p in files.values()),
        **(links or {}),
    }
    return write_report(
        outdir,
        meta={k: v for k, v in meta.items() if v not in (None, "")},
        config=dict(run.config),
        datasets=datasets,
        mplots=mplots,
        tplots=tplots,
        warmup=warmup,
        pending_files=pending_files or (),
        segments=_segments(run),
        environment=environment,
    )
