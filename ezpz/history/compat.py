"""The ezpz 0.26 History API on top of this History: ``HistoryCompat`` and ``grab_tensor``.

``History`` inherits :class:`HistoryCompat`, which adds the names code
written against ezpz 0.26 calls (``.data``, ``.groups``, ``get_dataset()``,
``get_grouped_datasets()``, ``to_DataArray()``, ``plot()``, ``plot_all()``,
``tplot_all()``, ``log_metrics()``). They read only History's public state
(``store``, ``history``, ``run_id``, ``config``, ``outdir``, ``report_dir``,
``rank``, ...) and draw with the same code as ``finalize()``
(:mod:`ezpz.history.dataset`, :mod:`ezpz.plot.mplot`, :mod:`ezpz.plot.tplot`),
so a plot made mid-run is the plot ``finalize()`` would make. Differences
from 0.26 are listed in ``docs/migrating.md``.

Nothing heavy is imported at module level: xarray and matplotlib load when a
dataset or plot is asked for.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import xarray as xr

    from ezpz.history.runinfo import RunInfo
    from ezpz.history.store import HistoryStore

__all__ = ["HistoryCompat", "grab_tensor"]

logger = logging.getLogger(__name__)


def grab_tensor(x: Any) -> Any:
    """``x`` as numpy: tensors (any device/dtype), lists of tensors or arrays, DataArrays.

    ``None`` stays None and Python/numpy scalars are returned unchanged (as in
    ezpz 0.26); a 0-d tensor becomes a Python number; a list or tuple of
    tensors or arrays is stacked along a new first axis. torch is never
    imported here: tensors are recognised by their methods.
    """
    if x is None or isinstance(x, (bool, int, float, complex, np.generic)):
        return x
    if isinstance(x, np.ndarray):
        return x
    values = getattr(x, "values", None)
    if isinstance(values, np.ndarray) and hasattr(x, "dims"):  # xarray.DataArray
        return values
    if callable(getattr(x, "detach", None)):  # torch.Tensor
        t = x.detach()
        if hasattr(t, "is_floating_point") and t.is_floating_point() and t.dtype.itemsize < 4:
            t = t.float()  # bf16/fp16: numpy has no bf16
        arr = t.cpu().numpy()
        return arr.item() if arr.ndim == 0 else arr
    if isinstance(x, (list, tuple)):
        if not x:
            return np.asarray(x, dtype=np.float64)
        items = [grab_tensor(v) for v in x]
        try:
            return np.stack([np.asarray(v) for v in items])
        except ValueError:  # ragged: keep what numpy can hold
            return np.asarray(items, dtype=object)
    numpy = getattr(x, "numpy", None)
    if callable(numpy):  # other array libraries (tf, cupy-like)
        return np.asarray(numpy())
    return np.asarray(x)


def _warmup_slice(n: int, warmup: float) -> slice:
    from ezpz.history.dataset import warmup_count  # the one warmup rule finalize uses

    return slice(warmup_count(n, warmup) if warmup else 0, None)


class HistoryCompat:
    """ezpz 0.26 names for :class:`~ezpz.history.History` (a mixin; see the module doc)."""

    # What History provides (declared for type checkers; set by History.__init__).
    store: HistoryStore
    run_id: str
    config: dict[str, Any]
    outdir: Path | None
    report_dir: Path
    report_enabled: bool
    rank: int
    world_size: int
    tracker: Any
    project_name: str | None

    if TYPE_CHECKING:

        @property
        def history(self) -> Mapping[str, np.ndarray]: ...

        def run_info(self, run_name: str | None = None) -> RunInfo: ...

    # -- reading ------------------------------------------------------------
    @property
    def data(self) -> Mapping[str, np.ndarray]:
        """ezpz 0.26's name of :attr:`history`: full key -> 1-d float64 array."""
        return self.history

    @property
    def groups(self) -> dict[str, dict[str, np.ndarray]]:
        """Group name -> {key inside the group -> values} (``""``: unprefixed keys).

        ``history.groups["train"]["loss"]`` is ``history.history["train/loss"]``;
        statistics keep their suffix (``"loss/mean"``); vector metrics are
        ``[rows, width]``. Each group has its own length. Readable mid-run.
        """
        out: dict[str, dict[str, np.ndarray]] = {}
        for gname, g in self.store.groups.items():
            if len(g) == 0:
                continue
            values = {name: g.column(name) for name in g.scalar_names()}
            values.update({name: g.vector(name) for name in g.vector_names()})
            out[gname] = values
        return out

    # -- datasets -----------------------------------------------------------
    def get_grouped_datasets(self, warmup: float = 0.0) -> dict[str, xr.Dataset]:
        """One ``xarray.Dataset`` per group, as ``finalize()`` writes them; nothing is written.

        ``warmup`` (fraction < 1 or count >= 1) drops leading draws of every
        group. Groups keep their own ``draw`` lengths.
        """
        from ezpz.history.finalize import build_datasets

        out = build_datasets(self.run_info(), self.store)
        if warmup:
            out = {
                g: ds.isel(draw=_warmup_slice(ds.sizes["draw"], warmup)) for g, ds in out.items()
            }
        return out

    def get_dataset(self, data: Mapping[str, Any] | None = None, warmup: float = 0.0) -> xr.Dataset:
        """Everything in one flat ``xarray.Dataset``; nothing is written.

        Variables are named by their full key with ``/`` as ``_``
        (``train/loss`` -> ``train_loss``; attribute ``full_key`` keeps the
        key). Groups logged on the same steps share the ``draw`` dimension;
        a group logged on other steps has its own (``eval_draw``, with
        coordinates ``eval_step``/``eval_time``), never NaN-padded. With
        ``data`` (``{key: values}``), that dict is converted instead, key by
        key with :meth:`to_DataArray`, as in ezpz 0.26.
        """
        import xarray as xr

        from ezpz.history.dataset import safe_name

        if data is not None:
            arrays = {}
            for key, values in data.items():
                try:
                    arrays[safe_name(str(key))] = self.to_DataArray(values, warmup)
                except (TypeError, ValueError) as err:
                    logger.error("get_dataset: cannot convert %r (%s); skipped", key, err)
            return xr.Dataset(arrays)
        grouped = self.get_grouped_datasets(warmup)
        if not grouped:
            return xr.Dataset()
        # Groups logged on the same steps share "draw" (the unprefixed group's,
        # else the first group's); any other group gets its own dimension.
        base = grouped.get("", next(iter(grouped.values())))["step"].values
        parts = []
        for gname, ds in grouped.items():
            prefix = f"{safe_name(gname)}_" if gname else ""
            renames: dict[str, str] = {}
            for var in ds.data_vars:
                full = str(ds[var].attrs.get("full_key", var))
                renames[str(var)] = safe_name(full.replace("/", "_"))
                for dim in ds[var].dims[1:]:  # vector chains: keep dims unique across groups
                    renames.setdefault(str(dim), f"{prefix}{dim}")
            if not np.array_equal(ds["step"].values, base):
                draw = f"{prefix}draw" if gname else "draw"
                renames.update({"draw": draw, "step": f"{prefix}step", "time": f"{prefix}time"})
                renames = {k: v for k, v in renames.items() if k != v}
            ds = ds.rename({k: v for k, v in renames.items() if k != v})
            ds.attrs = {}  # run attributes are set once below; variables keep theirs
            parts.append(ds)
        merged: xr.Dataset = xr.merge(
            parts, compat="override", join="outer", combine_attrs="drop_conflicts"
        )
        first = next(iter(grouped.values()))
        merged.attrs.update({k: v for k, v in first.attrs.items() if k != "group"})
        return merged

    def to_DataArray(self, x: Any, warmup: float = 0.0) -> xr.DataArray:  # noqa: N802 - 0.26 name
        """One metric's values as a DataArray, ezpz 0.26's layout.

        1-d (one value per draw) -> dims ``("draw",)``; 2-d ``[draws, chains]``
        -> ``("chain", "draw")``; 3-d ``[draws, leapfrog, chains]`` ->
        ``("chain", "leapfrog", "draw")``. ``warmup`` drops leading draws
        (fraction < 1 or count >= 1, the rule ``finalize()`` uses).
        """
        import xarray as xr

        arr = grab_tensor(x)
        arr = np.asarray(arr)
        if arr.dtype == object:
            raise ValueError("values of different shapes cannot form one DataArray")
        if np.iscomplexobj(arr):
            arr = arr.real
        if arr.ndim == 0:
            arr = arr.reshape(1)
        if arr.ndim > 3:
            raise ValueError(f"to_DataArray takes 1-3 dimensions, got shape {arr.shape}")
        arr = arr[_warmup_slice(len(arr), warmup)] if warmup else arr
        draws = np.arange(arr.shape[0])
        if arr.ndim == 1:
            return xr.DataArray(arr, dims=("draw",), coords={"draw": draws})
        arr = arr.T
        if arr.ndim == 2:
            dims: tuple[str, ...] = ("chain", "draw")
        else:
            dims = ("chain", "leapfrog", "draw")
        coords = {d: np.arange(n) for d, n in zip(dims, arr.shape, strict=True)}
        return xr.DataArray(arr, dims=dims, coords=coords)

    # -- plots ------------------------------------------------------------------
    def _compat_outdir(self, outdir: str | os.PathLike[str] | None) -> Path:
        """``outdir`` argument > ``History(outdir=...)`` > ``{report_dir}/{run_id}`` (as finalize)."""
        if outdir is not None:
            return Path(outdir)
        if getattr(self, "outdir", None) is not None:
            return Path(self.outdir)  # type: ignore[arg-type]
        return Path(self.report_dir) / str(self.run_id)

    def _compat_datasets(
        self, dataset: xr.Dataset | None, data: Mapping[str, Any] | None, warmup: float
    ) -> tuple[dict[str, xr.Dataset], float]:
        """The datasets to plot and the warmup still to apply (0 once applied)."""
        if dataset is not None:
            return {"": dataset}, warmup
        if data is not None:
            return {"": self.get_dataset(data=data, warmup=warmup)}, 0.0
        return self.get_grouped_datasets(), warmup

    def plot(
        self,
        val: Any,
        key: str | None = None,
        warmup: float = 0.0,
        num_chains: int = 128,
        title: str | None = None,
        outdir: str | os.PathLike[str] | None = None,
        subplots_kwargs: Mapping[str, Any] | None = None,
        plot_kwargs: Mapping[str, Any] | None = None,
        verbose: bool = False,
    ) -> Path | None:
        """One metric's values as a PNG, drawn as ``finalize()`` draws it; returns its path.

        ``val``: 1-d values, or ``[draws, chains]`` (a ridge plot). Written to
        ``{outdir}/{key}.png`` (default outdir: ``<run outdir>/plots/mplot``);
        only rank 0 writes (others return None). ``subplots_kwargs`` and
        ``plot_kwargs`` (matplotlib styling of 0.26) are accepted and not used.
        """
        if self.rank != 0:
            return None
        del subplots_kwargs, plot_kwargs  # the figure layout is finalize's
        import matplotlib
        import xarray as xr

        from ezpz.plot import metric_layout, safe_stem, warmup_start, x_values
        from ezpz.plot.mplot import DPI, VECTOR_FIGSIZE, ScalarCanvas, _new_figure, plot_vector

        name = key or "metric"
        arr = np.asarray(grab_tensor(val), dtype=np.float64)
        if arr.ndim == 0:
            arr = arr.reshape(1)
        if arr.ndim == 1:
            var = xr.Variable(("draw",), arr, {"key": name, "base": name, "stat": ""})
        elif arr.ndim == 2:
            var = xr.Variable(("draw", "chain"), arr, {"key": name, "base": name, "vector": 1})
        else:
            raise ValueError(f"plot() takes 1-d or 2-d values, got shape {arr.shape}")
        ds = xr.Dataset({"v": var}, coords={"step": ("draw", np.arange(arr.shape[0]))})
        metric = metric_layout(ds)[0]
        x = x_values(ds)
        start = warmup_start(x.size, warmup)
        plot_dir = (
            Path(outdir) if outdir is not None else self._compat_outdir(None) / "plots" / "mplot"
        )
        plot_dir.mkdir(parents=True, exist_ok=True)
        path = plot_dir / f"{safe_stem(name)}.png"
        with matplotlib.rc_context({"text.usetex": False}):
            if metric.vector:
                fig = _new_figure(VECTOR_FIGSIZE)
                plot_vector(fig, ds, metric, group="", start=start, x=x, num_chains=num_chains)
            else:
                canvas = ScalarCanvas()
                canvas.draw(ds, metric, group="", start=start, x=x)
                fig = canvas.fig
            if title:
                fig.suptitle(title, fontsize=12)
            fig.savefig(path, dpi=DPI)
        if verbose:
            logger.info("saved %s plot to %s", name, path)
        return path

    def plot_all(
        self,
        num_chains: int = 128,
        warmup: float = 0.0,
        title: str | None = None,
        verbose: bool = False,
        outdir: str | os.PathLike[str] | None = None,
        subplots_kwargs: Mapping[str, Any] | None = None,
        plot_kwargs: Mapping[str, Any] | None = None,
        dataset: xr.Dataset | None = None,
        data: Mapping[str, Any] | None = None,
    ) -> dict[str, list[Path]]:
        """Write the matplotlib plots ``finalize()`` writes, now; update the report.

        PNGs go to ``{outdir}/plots/mplot/{group}/`` (``outdir`` default: the
        run's outdir, where finalize writes), one per metric, ``title`` above
        each; ``report.md`` there is rewritten to show them (rank 0, when
        reports are enabled). ``dataset``/``data`` plot that instead of the
        recorded history. Returns ``{group: [paths]}``; other ranks write
        nothing and return ``{}``.
        """
        del subplots_kwargs, plot_kwargs  # the figure layout is finalize's
        if self.rank != 0:
            return {}
        from ezpz.plot.mplot import plot_group

        out = self._compat_outdir(outdir)
        datasets, left = self._compat_datasets(dataset, data, warmup)
        written = {
            g: plot_group(ds, out, group=g, warmup=left, num_chains=num_chains, title=title)
            for g, ds in datasets.items()
        }
        return self._compat_plotted("plot_all", written, out, datasets, warmup, verbose)

    def tplot_all(
        self,
        outdir: str | os.PathLike[str] | None = None,
        warmup: float = 0.0,
        append: bool = False,
        xkey: str | None = None,
        dataset: xr.Dataset | None = None,
        data: Mapping[str, Any] | None = None,
        logfreq: int | None = None,
        plot_type: str | None = None,
        verbose: bool = False,
    ) -> dict[str, list[Path]]:
        """Write the terminal plots ``finalize()`` writes, now; update the report.

        Text plots go to ``{outdir}/plots/tplot/{group}/``. ``plot_type``
        (``line``/``hist``) overrides ``EZPZ_TPLOT_TYPE``; ``append=True``
        appends to existing files instead of replacing them; ``xkey`` names a
        metric that is the x axis and so is not plotted itself. The x axis is
        the recorded step, so ``logfreq`` is not needed (accepted, unused).
        Returns ``{group: [paths]}``; other ranks return ``{}``.
        """
        del logfreq  # x is the recorded step already
        if self.rank != 0:
            return {}
        from ezpz.plot.tplot import plot_group

        out = self._compat_outdir(outdir)
        datasets, left = self._compat_datasets(dataset, data, warmup)
        if xkey:
            datasets = {
                g: ds.drop_vars(
                    [
                        v
                        for v in ds.data_vars
                        if xkey in (ds[v].attrs.get("key", v), ds[v].attrs.get("full_key", v))
                    ]
                )
                for g, ds in datasets.items()
            }
        written = {
            g: plot_group(ds, out, group=g, warmup=left, plot_type=plot_type, append=append)
            for g, ds in datasets.items()
        }
        return self._compat_plotted("tplot_all", written, out, datasets, warmup, verbose)

    def _compat_plotted(
        self,
        name: str,
        written: dict[str, list[Path]],
        out: Path,
        datasets: dict[str, xr.Dataset],
        warmup: float,
        verbose: bool,
    ) -> dict[str, list[Path]]:
        """After ``plot_all``/``tplot_all``: say what was written (verbose), update the report."""
        if verbose:
            for g, paths in written.items():
                logger.info("%s: %d plots of group %r in %s", name, len(paths), g, out)
        self._compat_report(out, datasets, warmup)
        return written

    def _compat_report(self, out: Path, datasets: dict[str, xr.Dataset], warmup: float) -> None:
        """Rewrite ``report.md`` in ``out`` with every plot found there (0.26 did on plotting)."""
        if not getattr(self, "report_enabled", True) or self.rank != 0:
            return
        from ezpz import __version__
        from ezpz.history.report import write_report
        from ezpz.plot import group_dirname

        def found(kind: str, pattern: str) -> dict[str, list[Path]]:
            return {
                g: sorted((out / "plots" / kind / group_dirname(g)).glob(pattern)) for g in datasets
            }

        meta = {
            "run_id": self.run_id,
            "run_name": getattr(self, "run_name", None) or self.run_id,
            "project": getattr(self, "project_name", None),
            "world_size": self.world_size,
            "ezpz_version": __version__,
            "outdir": str(out),
        }
        try:
            write_report(
                out,
                meta={k: v for k, v in meta.items() if v not in (None, "")},
                config=dict(self.config or {}),
                datasets=datasets,
                mplots=found("mplot", "*.png"),
                tplots=found("tplot", "*.txt"),
                warmup=warmup,
            )
        except Exception:  # a report problem never costs the plots
            logger.exception("could not update the report in %s", out)

    # -- logging ------------------------------------------------------------------
    def log_metrics(
        self,
        metrics: Mapping[str, Any],
        *,
        logger: logging.Logger | logging.LoggerAdapter[logging.Logger] | None = None,
        debug_prefixes: Sequence[str] = ("hist/",),
        include_summary: bool = True,
        rank0_only_summary: bool = True,
        precision: int = 6,
    ) -> str:
        """Log ``metrics`` as one INFO line in the console-summary format; returns it.

        Keys starting with one of ``debug_prefixes`` go to one DEBUG line
        instead. Statistics already in ``metrics`` (``loss/std``, ...) show as
        ``loss=value(±std)`` when ``include_summary`` (else they are dropped
        from the line). Nothing is reduced across ranks here (no collective:
        ``log_metrics`` may be called on one rank only); with
        ``rank0_only_summary`` only rank 0 logs. Records nothing: use
        :meth:`update` for that.
        """
        from ezpz.history.keys import STAT_SUFFIXES
        from ezpz.history.summary import format_compact_summary

        log = logger if logger is not None else logging.getLogger("ezpz.history")
        prefixes = tuple(debug_prefixes)
        info: dict[str, Any] = {}
        debug: dict[str, Any] = {}
        for key, value in metrics.items():
            (debug if prefixes and str(key).startswith(prefixes) else info)[str(key)] = value
        if not include_summary:
            suffixes = tuple(f"/{s}" for s in STAT_SUFFIXES)
            info = {k: v for k, v in info.items() if not k.endswith(suffixes)}
        line = format_compact_summary(info, precision) if info else ""
        if rank0_only_summary and self.rank != 0:
            return line
        if line:
            log.info(line)
        if debug:
            log.debug(format_compact_summary(debug, precision))
        return line
