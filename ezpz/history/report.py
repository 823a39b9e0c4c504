"""The markdown report of a finished run: ``{outdir}/report.md``.

Sections: run metadata, environment (never a secret), config, one metric
overview table per group (last, min, max, mean, std over the draws left
after warmup), output files, every PNG linked by a path relative to the
report, and the terminal plots inline. Only numpy is needed; the datasets
come in already built.

Secrets: the one policy of :mod:`ezpz._redact` (docs/reliability.md, "Redaction policy"). An environment
variable, metadata or config entry, or a command-line option, whose *name*
looks like a secret (``api_key``, ``hf_token``, ``db_password``...) is never
written (its value shows as ``<redacted>``), URLs lose their
``user:password@`` part (``***@``), and only an allow-list of environment
variables is reported at all. ``EZPZ_LOG_SECRETS=1`` lets config and
metadata values through; environment variables and the command line are
always scrubbed.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import re
import socket
import sys
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import numpy as np

from ezpz._files import atomic_write_text
from ezpz._redact import REDACTED, is_secret_key, mask_url, redact_config
from ezpz.plot import group_dirname, metric_layout, warmup_start

if TYPE_CHECKING:  # pragma: no cover
    import xarray as xr

__all__ = ["is_secret_name", "metric_summary", "redact", "write_report"]

logger = logging.getLogger(__name__)

#: environment variables worth a line in the report: exact names, then prefixes
_ENV_NAMES = (
    "WANDB_MODE",
    "WANDB_PROJECT",
    "WB_PROJECT",
    "WB_PROJECT_NAME",
    "WANDB_DISABLED",
    "MLFLOW_TRACKING_URI",
    "MLFLOW_EXPERIMENT_NAME",
    "CUDA_VISIBLE_DEVICES",
    "ZE_AFFINITY_MASK",
    "HIP_VISIBLE_DEVICES",
    "OMP_NUM_THREADS",
    "PBS_JOBID",
    "PBS_JOBNAME",
    "PBS_QUEUE",
    "SLURM_JOB_ID",
    "SLURM_JOB_NAME",
    "SLURM_JOB_PARTITION",
    "SLURM_NNODES",
    "SLURM_NTASKS",
)
_ENV_PREFIXES = ("EZPZ_",)


#: kept for callers of the earlier name; the rule is :func:`ezpz._redact.is_secret_key`
is_secret_name = is_secret_key


def redact(value: Any, name: str = "") -> Any:
    """``value`` with credentials removed (secret-named entries at any depth, URL userinfo).

    The report's view of :func:`ezpz._redact.redact_config`; ``name`` is the
    key ``value`` sits under (a secret name redacts the whole value).
    """
    if name and is_secret_key(name):
        return redact_config({name: value})[name]
    return redact_config(value)


def _scrub_argv(argv: Iterable[str]) -> list[str]:
    """The command line with values of secret-looking options removed."""
    out: list[str] = []
    hide_next = False
    for arg in argv:
        if hide_next:
            out.append(REDACTED)
            hide_next = False
            continue
        flag, eq, _ = arg.partition("=")
        if flag.startswith("-") and is_secret_key(flag):
            if eq:
                out.append(f"{flag}={REDACTED}")
            else:
                out.append(arg)
                hide_next = True
            continue
        if eq and is_secret_key(flag):  # key=value style (hydra and friends)
            out.append(f"{flag}={REDACTED}")
            continue
        out.append(mask_url(arg))
    return out


def _environment() -> dict[str, str]:
    """Where and how the run happened; only modules already imported are asked for versions."""
    env: dict[str, str] = {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "numpy": np.__version__,
    }
    for module in ("torch", "mpi4py", "xarray", "h5py", "wandb", "mlflow"):
        mod = sys.modules.get(module)
        version = getattr(mod, "__version__", None)
        if version:
            env[module] = str(version)
    mpi = sys.modules.get("mpi4py.MPI")
    if mpi is not None:
        try:
            env["MPI library"] = mpi.Get_library_version().strip().splitlines()[0]
        except Exception:  # an MPI that cannot say is no reason to fail the report
            pass
    env["working directory"] = os.getcwd()
    env["command"] = " ".join(_scrub_argv(sys.argv))
    return env


def _env_vars() -> dict[str, str]:
    names = [n for n in os.environ if n in _ENV_NAMES or n.startswith(_ENV_PREFIXES)]
    return {n: mask_url(os.environ[n]) for n in sorted(names) if not is_secret_key(n)}


def _fmt(value: Any) -> str:
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if np.isnan(v):
            return "nan"
        if np.isinf(v):
            return "inf" if v > 0 else "-inf"
        return f"{v:.6g}"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if value is None:
        return ""
    return str(value)


def _cell(value: Any) -> str:
    """Table-cell text: pipes escaped, newlines folded."""
    return _fmt(value).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return lines


def metric_summary(values: np.ndarray) -> dict[str, float]:
    """last, min, max, mean, std (population) of ``values``; statistics over finite values only.

    ``last`` is the last value as logged (NaN if the last draw was NaN);
    ``finite`` counts the values the statistics are over.
    """
    values = np.asarray(values, dtype=np.float64)
    last = float(values[-1]) if values.ndim == 1 and values.size else float("nan")
    if values.ndim == 2 and values.shape[0]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN last draw stays NaN
            last = float(np.nanmean(values[-1]))
    flat = values.ravel()
    ok = flat[np.isfinite(flat)]
    if ok.size == 0:
        nan = float("nan")
        return {"last": last, "min": nan, "max": nan, "mean": nan, "std": nan, "finite": 0}
    return {
        "last": last,
        "min": float(ok.min()),
        "max": float(ok.max()),
        "mean": float(ok.mean()),
        "std": float(ok.std()),
        "finite": int(ok.size),
    }


def _group_title(group: str) -> str:
    return group if group else f"{group_dirname(group)} (unprefixed metrics)"


def _metrics_section(group: str, ds: xr.Dataset, warmup: float) -> list[str]:
    n = int(ds.sizes.get("draw", 0))
    start = warmup_start(n, warmup)
    lines = [f"### {_group_title(group)}", ""]
    lines.append(
        f"{n} draws; statistics over the last {n - start} "
        f"(warmup={warmup:g} dropped {start}). Non-finite values are left out of "
        "min/max/mean/std and counted in *finite*."
    )
    lines.append("")
    rows = []
    for metric in metric_layout(ds):
        values = np.asarray(ds[metric.main_var()].values[start:], dtype=np.float64)
        stats = metric_summary(values)
        name = metric.label(group)
        if metric.raw is None:
            name += " (cross-rank mean)"
        if metric.vector:
            name += f" ({values.shape[1] if values.ndim == 2 else 1} chains)"
        total = values.size
        rows.append(
            [name, stats["last"], stats["min"], stats["max"], stats["mean"], stats["std"]]
            + [f"{stats['finite']}/{total}"]
        )
    if rows:
        lines += _table(["metric", "last", "min", "max", "mean", "std", "finite"], rows)
    else:
        lines.append("_no metrics_")
    lines.append("")
    return lines


def _link(path: Path, outdir: Path) -> str:
    """URL-quoted path of ``path`` relative to the report's directory."""
    # abspath, not resolve(): a symlink in outdir (the structured-log link) is
    # linked as itself, so the link survives copying outdir elsewhere.
    rel = os.path.relpath(os.path.abspath(path), os.path.abspath(outdir))
    return quote(Path(rel).as_posix())


def _fence(text: str) -> str:
    """A code fence longer than any backtick run inside ``text``."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


#: data files the report links when they are in outdir (the csv backend's included)
OUTPUT_PATTERNS = (
    "*.h5",
    "metrics.jsonl",
    "metrics.csv",
    "training_history.csv",
    "training_history_*.csv",
    "config.json",
)


def _output_files(outdir: Path, pending: Iterable[str | os.PathLike[str]] = ()) -> list[str]:
    """Links to the data files in outdir, then ``pending`` ones written after the report."""
    found: list[Path] = []
    for pattern in OUTPUT_PATTERNS:
        found += sorted(p for p in outdir.glob(pattern) if p.is_file())
    found += sorted(p for p in outdir.glob("*-rank0.jsonl") if p.exists())
    lines = []
    for path in dict.fromkeys(found):
        size = path.stat().st_size
        lines.append(f"- [{path.name}]({_link(path, outdir)}) ({size:,} bytes)")
    for name in dict.fromkeys(pending):
        path = outdir / name
        if path not in found:
            lines.append(f"- [{path.name}]({_link(path, outdir)}) (written after this report)")
    return lines


def write_report(
    outdir: Path,
    *,
    meta: dict[str, Any],
    config: dict[str, Any],
    datasets: dict[str, xr.Dataset],
    mplots: dict[str, list[Path]],
    tplots: dict[str, list[Path]],
    warmup: float,
    environment: Mapping[str, Any] | None = None,
    segments: str | None = None,
    pending_files: Iterable[str | os.PathLike[str]] = (),
) -> Path:
    """Write ``{outdir}/report.md`` (replacing any earlier one) and return its path.

    ``meta``: run facts to list (run_id, run_name, world_size, ...);
    ``environment``: extra rows for the environment table (``finalize(env_info=...)``;
    nested sections become ``section: key`` rows; secret-named entries redacted);
    ``datasets``: ``{group: Dataset}`` (``""`` = unprefixed group);
    ``mplots`` / ``tplots``: ``{group: [paths]}`` as returned by the plot
    modules; ``warmup``: fraction < 1 or count >= 1 dropped before statistics;
    ``segments``: a markdown table of the jobs the run spanned
    (:func:`ezpz.history.resume.segments_markdown`); ``pending_files``: names
    in outdir written after the report (the csv backend's
    ``training_history*.csv``), listed under Files too.
    """
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    meta = redact(dict(meta))
    title = meta.get("run_name") or meta.get("run_id") or outdir.name
    lines = [f"# ezpz run report: {title}", ""]

    lines += ["## Run", ""]
    lines += (
        _table(["field", "value"], [[k, v] for k, v in meta.items()]) if meta else ["_no metadata_"]
    )
    if segments:
        lines += ["", "## Segments", "", segments.rstrip("\n")]
    lines += ["", "## Environment", ""]
    env_rows = [[k, v] for k, v in _environment().items()]
    if environment:
        for key, value in redact(dict(environment)).items():  # redacted before flattening
            if isinstance(value, Mapping):
                env_rows += [[f"{key}: {k}", v] for k, v in value.items()]
            else:
                env_rows.append([str(key), value])
    lines += _table(["field", "value"], env_rows)
    env_vars = _env_vars()
    if env_vars:
        lines += ["", "Environment variables (credentials never shown):", ""]
        lines += _table(["variable", "value"], [[k, v] for k, v in env_vars.items()])

    lines += ["", "## Config", ""]
    if config:
        text = json.dumps(redact(config), indent=2, default=str, allow_nan=True)
        lines += [_fence(text) + "json", text, _fence(text), ""]
    else:
        lines += ["_no config_", ""]

    lines += ["## Metrics", ""]
    for group, ds in datasets.items():
        lines += _metrics_section(group, ds, warmup)

    files = _output_files(outdir, pending_files)
    if files:
        lines += ["## Files", "", *files, ""]

    if any(mplots.values()):
        lines += ["## Plots", ""]
        for group, paths in mplots.items():
            if not paths:
                continue
            lines += [f"### {_group_title(group)}", ""]
            for path in paths:
                lines += [f"![{Path(path).stem}]({_link(path, outdir)})", ""]

    if any(tplots.values()):
        lines += ["## Terminal plots", ""]
        for group, paths in tplots.items():
            if not paths:
                continue
            lines += [
                "<details>",
                f"<summary>{_group_title(group)}: {len(paths)} terminal plots</summary>",
                "",
            ]
            for path in paths:
                try:
                    text = Path(path).read_text(encoding="utf-8").rstrip("\n")
                except OSError as err:
                    logger.warning("terminal plot %s unreadable: %s", path, err)
                    continue
                fence = _fence(text)
                lines += [f"[{Path(path).name}]({_link(path, outdir)})", "", fence, text, fence, ""]
            lines += ["</details>", ""]

    report = outdir / "report.md"
    # a re-run replaces the report whole, never half-written
    atomic_write_text(report, "\n".join(lines).rstrip("\n") + "\n")
    logger.debug("wrote %s", report)
    return report
