"""MLflow backend: one run on rank 0, metrics in batches, survives server outages.

What it logs (see docs/backends.md):

- params ``ezpz.*``: where the run ran (host, versions, world size, job);
  ``config.*``: the user's config, nested keys dot-joined;
- metrics: one ``log_batch`` request per ``log()`` call; when statistics
  (``X/mean`` ...) are in the same call, the raw ``X`` is logged as
  ``X/local``; the step auto-increments when not given;
- artifacts: files handed to ``log_artifact`` / ``log_image`` / ``log_table``;
- system metrics (``system/*``) from MLflow's own monitor when psutil exists.

Nothing here talks to the server from the constructor: the run is created on
the first call (on the tracker's worker thread) or by :meth:`start`. When the
server cannot be reached, metrics wait in a bounded buffer (oldest dropped
first, counted) and are sent after a back-off, so an outage costs the
training loop nothing and loses nothing that fits in the buffer.
"""

from __future__ import annotations

import csv
import logging
import os
import posixpath
import re
import shutil
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from itertools import islice
from typing import Any

from ezpz._env import env_flag, env_int
from ezpz._redact import mask_url, protect_logger, redact_config
from ezpz.history.keys import stat_bases
from ezpz.tracker.base import TrackerBackend
from ezpz.tracker.csv_table import neutralize
from ezpz.tracker.mlflow_auth import (
    auth_headers,
    ensure_provider_registered,
    load_credentials,
    redact,
    request_scope,
)
from ezpz.tracker.project_name import mlflow_experiment
from ezpz.tracker.sysinfo import system_info

# every message of this module passes the secret filter (URL credentials, tokens)
logger = protect_logger(logging.getLogger(__name__))

MAX_METRICS_PER_REQUEST = 1000  # MLflow's log_batch limit
MAX_PARAMS_PER_REQUEST = 100  # MLflow's log_batch limit
MAX_KEY_LENGTH = 250
MAX_PARAM_VALUE_LENGTH = 6000
DEFAULT_MAX_PENDING = 100_000  # metric values held while the server is unreachable
MAX_BACKOFF_S = 60.0
MONITOR_STOP_TIMEOUT_S = 10.0

# MLflow (POSIX) accepts letters, digits, _ - . space : / in names.
_BAD_NAME_CHARS = re.compile(r"[^\w.\- :/]")


def mlflow_name(key: str) -> str:
    """``key`` made acceptable to MLflow as a metric or param name.

    Characters MLflow rejects become ``_``; empty path segments (``a//b``,
    leading or trailing ``/``) are dropped; ``.`` and ``..`` segments become
    ``_`` (MLflow refuses names that normalise to another path); at most 250
    characters.
    """
    name = _BAD_NAME_CHARS.sub("_", key)
    segments = ["_" if s in (".", "..") else s for s in name.split("/") if s]
    return ("/".join(segments) or "_")[:MAX_KEY_LENGTH]


def as_metric_value(value: Any) -> float | None:
    """A float for MLflow, or None when ``value`` is not a single number."""
    if isinstance(value, (bool, int, float)):
        return float(value)
    size = getattr(value, "size", None)
    if callable(size):  # torch.Tensor.size() is a method; numel() counts
        size = value.numel() if hasattr(value, "numel") else None
    if size is not None and size != 1:
        return None
    try:
        return float(value.item() if hasattr(value, "item") else value)
    except (TypeError, ValueError):
        return None


def flatten_params(config: Mapping[str, Any], prefix: str) -> dict[str, str]:
    """Nested mapping -> ``{prefix.a.b: str(value)}``."""
    flat: dict[str, str] = {}

    def walk(node: Mapping[str, Any], path: str) -> None:
        for key, value in node.items():
            full = f"{path}.{key}"
            if isinstance(value, Mapping) and value:
                walk(value, full)
            else:
                flat[full] = str(value)

    walk(config, prefix)
    return flat


def _is_permanent(exc: BaseException) -> bool:
    """True for errors a retry cannot fix (bad request, missing file)."""
    if isinstance(exc, (FileNotFoundError, IsADirectoryError, NotADirectoryError)):
        return True
    status = getattr(exc, "get_http_status_code", None)
    try:
        return callable(status) and status() in (400, 404, 409, 413)
    except Exception:
        return False


LOCAL_STORE_DB = "mlflow.db"
LOCAL_STORE_ARTIFACTS = "mlartifacts"


def local_store(outdir: str | os.PathLike[str]) -> tuple[str, str]:
    """``(tracking URI, artifact location)`` of the local store under ``outdir``.

    Used when no tracking URI is configured: ``sqlite:///{outdir}/mlflow.db``
    and ``{outdir}/mlartifacts`` (absolute paths, so a later ``chdir`` is harmless).
    """
    base = os.path.abspath(os.fspath(outdir))
    os.makedirs(base, exist_ok=True)  # sqlite creates the file, not its directory
    return f"sqlite:///{base}/{LOCAL_STORE_DB}", os.path.join(base, LOCAL_STORE_ARTIFACTS)


class MlflowBackend(TrackerBackend):
    """Logs to one MLflow run from rank 0; other ranks do nothing at all.

    Args:
        project_name: experiment name (else MLFLOW_EXPERIMENT_NAME, then the
            W&B project variables, then ``ezpz.{parent}.{stem}`` of the script).
        config: user config, logged as ``config.*`` params.
        tracking_uri: else ``MLFLOW_TRACKING_URI``, else MLflow's default.
        run_name, tags: for the new run. ``run_id``: log to an existing run.
        system_metrics: MLflow's system monitor; default on when psutil is
            installed, unless ``MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING=false``.
        max_pending: metric values kept while the server is unreachable
            (``EZPZ_MLFLOW_MAX_PENDING``, default 100000).
    """

    name = "mlflow"

    def __init__(
        self,
        project_name: str | None = None,
        config: Mapping[str, Any] | None = None,
        outdir: str | None = None,
        rank: int | None = None,
        world_size: int | None = None,
        *,
        tracking_uri: str | None = None,
        run_name: str | None = None,
        run_id: str | None = None,
        tags: Mapping[str, str] | None = None,
        system_metrics: bool | None = None,
        max_pending: int | None = None,
        ezpz_run_id: str | None = None,
        resumed: bool = False,
        resume_step: int | None = None,
        **kwargs: Any,
    ) -> None:
        if rank is None or world_size is None:
            from ezpz.dist import get_rank, get_world_size

            rank = get_rank() if rank is None else rank
            world_size = get_world_size() if world_size is None else world_size
        self.rank, self.world_size = int(rank), int(world_size)
        self.enabled = self.rank == 0
        self._run_id: str | None = run_id
        self._finished = False
        self.ezpz_run_id = ezpz_run_id
        self._resumed = bool(resumed)
        # A resumed run: steps up to the last recorded one were sent by an earlier job.
        self._resume_step = resume_step if resumed else None
        self._end_status = "FINISHED"
        if not self.enabled:
            return

        load_credentials()
        try:
            import mlflow
            from mlflow import MlflowClient
        except ImportError as exc:
            raise ImportError(
                "the 'mlflow' tracker backend needs MLflow: pip install mlflow "
                "(or pip install 'ezpz-history[mlflow]')"
            ) from exc
        ensure_provider_registered()
        standalone = _standalone_backend()
        if run_id is None and standalone is not None:
            run_id = self._run_id = standalone.run_id
            tracking_uri = tracking_uri or standalone.tracking_uri
        # No tracking URI anywhere (argument, MLFLOW_TRACKING_URI, set_tracking_uri):
        # a local store under the run's outdir, never MLflow's ./mlflow.db in the cwd.
        self._artifact_location: str | None = None
        if tracking_uri is None and outdir is not None:
            from mlflow.tracking import is_tracking_uri_set

            if not is_tracking_uri_set():
                tracking_uri, self._artifact_location = local_store(outdir)
                logger.info(
                    "mlflow: no MLFLOW_TRACKING_URI; runs are stored in %s (artifacts in %s)",
                    tracking_uri,
                    self._artifact_location,
                )
        self.tracking_uri: str = tracking_uri or mlflow.get_tracking_uri()
        self.experiment_name = mlflow_experiment(project_name)
        self.run_name = run_name
        self._tags = dict(tags or {})
        self._headers = auth_headers()
        self._client_cls = MlflowClient
        self._client: Any = None
        self._lock = threading.RLock()
        self._step = 0
        self.max_pending = int(
            max_pending or env_int("EZPZ_MLFLOW_MAX_PENDING", DEFAULT_MAX_PENDING, minimum=1)
        )
        self._pending: deque[Any] = deque()
        self._pending_params: dict[str, str] = {}
        self._pending_artifacts: list[tuple[str, str | None]] = []
        self._params_sent: dict[str, str] = {}
        self._warned: set[str] = set()
        self.dropped = 0  # metric values dropped because the buffer was full
        self._failures = 0
        self._retry_at = 0.0
        self._spool_dir: str | None = None
        self._monitor: Any = None
        if system_metrics is None:
            system_metrics = env_flag("MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING", True)
        self._system_metrics = bool(system_metrics)

        self._queue_params(
            flatten_params(system_info(world_size=self.world_size), "ezpz")
            if run_id is None and not self._resumed
            else {}
        )
        if config:
            self.log_config(config)

    # -- public -----------------------------------------------------------
    @property
    def run_id(self) -> str | None:
        """The MLflow run id (None until the run exists; see :meth:`start`)."""
        return self._run_id

    @property
    def client(self) -> Any:
        """The ``MlflowClient`` this backend uses (None on ranks other than 0)."""
        if not self.enabled:
            return None
        if self._client is None:
            self._client = self._client_cls(tracking_uri=self.tracking_uri)
        return self._client

    def start(self) -> bool:
        """Create the run now (normally done on the first call). True when it exists."""
        if not self.enabled:
            return False
        return self._flush(force=True)

    def log(self, metrics: Mapping[str, Any], step: int | None = None, commit: bool = True) -> None:
        if not self.enabled or self._finished:
            return
        if self._resume_step is not None and step is not None and step <= self._resume_step:
            self._warn_once(
                "resume",
                "the resumed run logs step %d again (an earlier job logged up to step %d); "
                "MLflow keeps the first values, so repeated steps are not sent (the JSONL "
                "and the ezpz outputs hold the new ones)",
                step,
                self._resume_step,
            )
            return
        if step is None:
            step = self._step
            if commit:
                self._step += 1
        else:
            self._step = int(step) + 1 if commit else int(step)
        self._queue_metrics(metrics, int(step))
        self._flush()

    def log_config(self, config: Mapping[str, Any]) -> None:
        if not self.enabled or self._finished:
            return
        # secrets redacted at any depth (ezpz._redact; docs/reliability.md) before flattening
        self._queue_params(flatten_params(redact_config(dict(config)), "config"))
        if self._client is not None:  # only once the run is being used
            self._flush()

    def log_artifact(self, path: str, name: str | None = None) -> None:
        if not self.enabled or self._finished:
            return
        self._pending_artifacts.append((os.fspath(path), name))
        self._flush()

    def log_image(self, key: str, path: str, caption: str | None = None) -> None:
        """The image as an artifact under ``plots/``: key ``plots/train/loss`` -> ``plots/train/``.

        A key that already starts with ``plots/`` (finalize's) is not prefixed
        again; any other key's folder goes under ``plots/`` (``samples/x`` ->
        ``plots/samples/``).
        """
        folder = posixpath.dirname(mlflow_name(key))
        if folder != "plots" and not folder.startswith("plots/"):
            folder = posixpath.join("plots", folder) if folder else "plots"
        self.log_artifact(path, folder)

    def log_table(self, key: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        if not self.enabled or self._finished:
            return
        if self._spool_dir is None:
            self._spool_dir = tempfile.mkdtemp(prefix="ezpz-mlflow-")
        name = mlflow_name(key)
        folder = os.path.join(self._spool_dir, str(len(os.listdir(self._spool_dir))))
        os.makedirs(folder)
        path = os.path.join(folder, f"{posixpath.basename(name)}.csv")
        with open(path, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            # a csv file: cells a spreadsheet would run as formulas get a leading '
            writer.writerow([neutralize(str(c)) for c in columns])
            writer.writerows([neutralize(v) if isinstance(v, str) else v for v in r] for r in rows)
        parent = posixpath.dirname(name)
        self.log_artifact(path, posixpath.join("tables", parent) if parent else "tables")

    def watch(self, model: Any, **kwargs: Any) -> None:
        """MLflow has no gradient watching; nothing to do."""

    def set_outdir(self, outdir: str | os.PathLike[str]) -> None:
        """Nothing to move: this backend writes no files of its own in ``outdir``."""

    def finish(self) -> None:
        if not self.enabled or self._finished:
            return
        self._finished = True
        self._stop_monitor()
        delivered = self._flush(force=True)
        with self._lock:
            # After a failed flush the server is away: marking the run would only block.
            if delivered and self._run_id is not None and self._client is not None:
                try:
                    with request_scope(self._headers):
                        self.client.set_terminated(self._run_id, self._end_status)
                except Exception as exc:
                    self._warn_once("terminate", "could not mark the run finished: %s", exc)
            left = len(self._pending), len(self._pending_params), len(self._pending_artifacts)
        if not delivered or any(left) or self.dropped:
            logger.warning(
                "mlflow: undelivered at finish: %d metric values, %d params, %d artifacts "
                "(%d metric values dropped earlier because the buffer was full); "
                "the JSONL log keeps every metric",
                *left,
                self.dropped,
            )
        if self._spool_dir is not None:
            shutil.rmtree(self._spool_dir, ignore_errors=True)
        standalone = _standalone_backend()
        if standalone is not None and standalone.run_id == self._run_id:
            _set_standalone(None)

    def mark_interrupted(self) -> None:
        """A signal ended the run: :meth:`finish` marks it KILLED instead of FINISHED."""
        self._end_status = "KILLED"

    # -- queueing ---------------------------------------------------------
    def _queue_metrics(self, metrics: Mapping[str, Any], step: int) -> None:
        from mlflow.entities import Metric

        with_stats = stat_bases(metrics)
        now_ms = int(time.time() * 1000)
        batch: dict[str, Any] = {}
        for key, raw in metrics.items():
            value = as_metric_value(raw)
            if value is None:
                self._warn_once(f"skip:{key}", "metric %r is not a single number; not sent", key)
                continue
            name = mlflow_name(f"{key}/local" if key in with_stats else key)
            if name != key and key not in with_stats:
                self._warn_once(f"rename:{key}", "metric %r is sent to MLflow as %r", key, name)
            batch[name] = Metric(name, value, now_ms, step)
        with self._lock:
            self._pending.extend(batch.values())
            overflow = len(self._pending) - self.max_pending
            for _ in range(max(overflow, 0)):
                self._pending.popleft()
            if overflow > 0:
                self.dropped += overflow
                self._warn_once(
                    "overflow",
                    "mlflow buffer full (%d values): dropping the oldest",
                    self.max_pending,
                )

    def _queue_params(self, params: Mapping[str, str]) -> None:
        with self._lock:
            for key, value in params.items():
                name = mlflow_name(key)
                value = value[:MAX_PARAM_VALUE_LENGTH]
                known = self._params_sent.get(name, self._pending_params.get(name))
                if known is None:
                    self._pending_params[name] = value
                elif known != value:
                    self._warn_once(
                        f"param:{name}",
                        "param %r already logged with another value; MLflow params "
                        "cannot change, keeping the first",
                        name,
                    )

    # -- delivery ---------------------------------------------------------
    def _flush(self, force: bool = False) -> bool:
        """Send what is pending; on failure keep it and back off. True when all sent."""
        with self._lock:
            if not force and time.monotonic() < self._retry_at:
                return False
            try:
                with request_scope(self._headers):
                    self._ensure_run()
                    self._send_params()
                    self._send_metrics()
                    self._send_artifacts()
            except Exception as exc:
                self._on_failure(exc)
                return False
            if self._failures:
                logger.info("mlflow: server reachable again after %d failures", self._failures)
            self._failures = 0
            self._retry_at = 0.0
            return True

    def _on_failure(self, exc: Exception) -> None:
        self._failures += 1
        delay = min(MAX_BACKOFF_S, 2.0 ** (self._failures - 1))
        self._retry_at = time.monotonic() + delay
        if self._failures == 1:
            logger.warning(
                "mlflow: cannot reach %s (%s); keeping metrics (%d pending) and retrying "
                "with back-off",
                mask_url(self.tracking_uri),
                redact(f"{type(exc).__name__}: {exc}")[:500],
                len(self._pending),
            )

    def _ensure_run(self) -> None:
        if self._run_id is not None:
            return
        client = self.client
        experiment = client.get_experiment_by_name(self.experiment_name)
        if experiment is not None:
            experiment_id = experiment.experiment_id
        else:
            try:
                experiment_id = client.create_experiment(
                    self.experiment_name, artifact_location=self._artifact_location
                )
            except Exception:  # another process created it first
                experiment = client.get_experiment_by_name(self.experiment_name)
                if experiment is None:
                    raise
                experiment_id = experiment.experiment_id
        if self.ezpz_run_id is not None and self._reattach(client, experiment_id):
            return
        tags = {
            "mlflow.source.name": os.path.basename(sys.argv[0] or "") or "ezpz",
            "mlflow.source.type": "LOCAL",
            "ezpz.world_size": str(self.world_size),
            **self._tags,
        }
        if self.ezpz_run_id is not None:
            tags["ezpz.run_id"] = self.ezpz_run_id
        run = client.create_run(experiment_id, run_name=self.run_name, tags=tags)
        self._run_id = run.info.run_id
        logger.info("mlflow: run %s in experiment %r", self._run_id, self.experiment_name)
        if self._system_metrics:
            self._start_monitor()

    def _reattach(self, client: Any, experiment_id: str) -> bool:
        """Continue the run tagged ``ezpz.run_id`` (a resumed ezpz run); False if none."""
        if not self._resumed:
            return False
        found = client.search_runs(
            [experiment_id],
            filter_string=f"tags.`ezpz.run_id` = '{self.ezpz_run_id}'",
            max_results=1,
            order_by=["attributes.start_time DESC"],
        )
        if not found:
            return False
        run = found[0]
        self._run_id = run.info.run_id
        if run.info.status != "RUNNING":  # interrupted (KILLED) earlier: running again now
            client.update_run(self._run_id, status="RUNNING")
        logger.info(
            "mlflow: continuing run %s (ezpz run %s, was %s)",
            self._run_id,
            self.ezpz_run_id,
            run.info.status,
        )
        if self._system_metrics:
            self._start_monitor()
        return True

    def _send_params(self) -> None:
        from mlflow.entities import Param

        while self._pending_params:
            chunk = dict(islice(self._pending_params.items(), MAX_PARAMS_PER_REQUEST))
            try:
                self.client.log_batch(self._run_id, params=[Param(k, v) for k, v in chunk.items()])
            except Exception as exc:
                if not _is_permanent(exc):
                    raise
                self._warn_once("params", "mlflow refused params: %s", redact(str(exc))[:500])
            for key, value in chunk.items():
                self._params_sent[key] = value
                del self._pending_params[key]

    def _send_metrics(self) -> None:
        while self._pending:
            chunk = list(islice(self._pending, MAX_METRICS_PER_REQUEST))
            try:
                self.client.log_batch(self._run_id, metrics=chunk)
            except Exception as exc:
                if not _is_permanent(exc):
                    raise
                self._warn_once("metrics", "mlflow refused metrics: %s", redact(str(exc))[:500])
            for _ in chunk:
                self._pending.popleft()

    def _send_artifacts(self) -> None:
        while self._pending_artifacts:
            path, artifact_path = self._pending_artifacts[0]
            try:
                self.client.log_artifact(self._run_id, path, artifact_path=artifact_path)
            except Exception as exc:
                if not _is_permanent(exc):
                    raise
                self._warn_once(
                    f"artifact:{path}", "artifact %s not logged: %s", path, redact(str(exc))
                )
            self._pending_artifacts.pop(0)

    # -- system metrics ---------------------------------------------------
    def _start_monitor(self) -> None:
        try:
            import psutil  # noqa: F401  (MLflow's monitor needs it)

            monitor_cls = _scoped_monitor_class()
            self._monitor = monitor_cls(
                self._run_id, tracking_uri=self.tracking_uri, headers=self._headers
            )
            self._monitor.start()
        except Exception as exc:  # psutil missing or monitor failure: no system metrics
            logger.info("mlflow: no system metrics (%s)", exc)
            self._monitor = None

    def _stop_monitor(self) -> None:
        monitor, self._monitor = self._monitor, None
        if monitor is None:
            return
        # MLflow's finish() joins without a timeout; a dead server must not hang us.
        stopper = threading.Thread(target=monitor.finish, name="ezpz-mlflow-monitor-stop")
        stopper.daemon = True
        with request_scope(self._headers):
            stopper.start()
        stopper.join(MONITOR_STOP_TIMEOUT_S)
        if stopper.is_alive():
            logger.warning("mlflow: system-metrics monitor did not stop in time")

    def _warn_once(self, kind: str, message: str, *args: Any) -> None:
        if kind not in self._warned:
            self._warned.add(kind)
            logger.warning("mlflow: " + message, *args)


_monitor_class: Any = None


def _scoped_monitor_class() -> Any:
    """MLflow's SystemMetricsMonitor whose thread sends ezpz's auth headers."""
    global _monitor_class
    if _monitor_class is None:
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        class ScopedSystemMetricsMonitor(SystemMetricsMonitor):
            def __init__(self, *args: Any, headers: Mapping[str, str], **kwargs: Any) -> None:
                super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]
                self._ezpz_headers = dict(headers)

            def monitor(self) -> None:
                with request_scope(self._ezpz_headers):
                    super().monitor()  # type: ignore[no-untyped-call]

            def finish(self) -> None:
                with request_scope(self._ezpz_headers):
                    super().finish()  # type: ignore[no-untyped-call]

        _monitor_class = ScopedSystemMetricsMonitor
    return _monitor_class


_standalone: MlflowBackend | None = None


def _standalone_backend() -> MlflowBackend | None:
    return _standalone if _standalone is not None and not _standalone._finished else None


def _set_standalone(backend: MlflowBackend | None) -> None:
    global _standalone
    _standalone = backend


def setup_mlflow(
    project_name: str | None = None,
    config: Mapping[str, Any] | None = None,
    *,
    tracking_uri: str | None = None,
    run_name: str | None = None,
    tags: Mapping[str, str] | None = None,
    rank: int | None = None,
    world_size: int | None = None,
    **kwargs: Any,
) -> MlflowBackend | None:
    """Start an MLflow run now, outside of History (rank 0; None elsewhere).

    Returns the backend (``.run_id``, ``.client``, ``.log(...)``,
    ``.finish()``). A History created afterwards with ``backends="mlflow"``
    logs into this same run instead of starting another.
    """
    backend = MlflowBackend(
        project_name=project_name,
        config=config,
        rank=rank,
        world_size=world_size,
        tracking_uri=tracking_uri,
        run_name=run_name,
        tags=tags,
        **kwargs,
    )
    if not backend.enabled:
        return None
    if not backend.start():
        logger.warning("mlflow: run not created yet (server unreachable); will retry")
    _set_standalone(backend)
    return backend
