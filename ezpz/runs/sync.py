"""``ezpz-history sync RUN --backends mlflow,wandb,csv``: replay a JSONL into backends.

The offline-compute-node workflow: log with ``backends="none"`` (or csv) on
the compute nodes, sync from a login node. Every target is keyed by the ezpz
run id, so syncing is idempotent and resumable:

- **mlflow**: the run carrying the tag ``ezpz.run_id=<run_id>`` (in any
  experiment) is reused, else created in the experiment (``--experiment`` >
  ``MLFLOW_EXPERIMENT_NAME`` > W&B project variables > ``ezpz-sync``).
  Metrics go in ``log_batch`` requests of 999 values, in file order, each
  request carrying the sync cursor as the run tag ``ezpz.sync.offset`` (the
  byte offset of the JSONL up to which every row is in MLflow; MLflow's limit
  of 1000 per request counts the tag). MLflow's
  stores write a batch's metrics before its tags, so the cursor never runs
  ahead of the metrics. A later sync starts at the cursor; values right after
  it (the batch a killed sync may have sent without its tag) are compared with
  the latest step MLflow holds per metric and skipped when already there.
  Timestamps come from the rows' ``_time``, so a value sent twice is the same
  point (MLflow's SQL store keeps it once). With ``workers`` > 1 requests
  overlap, the cursor only covers requests that have all completed (and never
  goes back), and the values after it are re-sent on resume (run tag
  ``ezpz.sync.mode``). The server's SQL store is the limit of the rate:
  benchmarks/sync_bench.py measures it.
- **wandb**: a run whose id is the ezpz run id (``resume="allow"``), offline
  per ``WANDB_MODE``; the cursor, and which of finalize's outputs went, live
  in ``<jsonl>.sync.json`` beside the log.
- **csv**: ``metrics.csv`` and ``config.json`` rebuilt (atomically replaced) in
  ``--csv-dir`` (default: the run's outdir).

What is sent is what a live run would have sent: the same ``/local`` renaming
and MLflow name cleaning, ``config.*`` params (secrets redacted), finalize's
outputs when the outdir holds them (MLflow artifacts; W&B images under the
plot keys and ``ezpz-output`` artifacts), the run marked finished when the JSONL
says the run was finalized (killed when interrupted).
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from ezpz.history.keys import stat_bases
from ezpz.runs.locate import RunInfo
from ezpz.runs.records import (
    EVENT_FIELD,
    FINISHED,
    INTERRUPTED,
    STEP_FIELD,
    TIME_FIELD,
    NotAnEzpzLogError,
    check_ezpz_log,
    iter_lines,
    run_state,
    start_event,
    to_float,
)

logger = logging.getLogger(__name__)

RUN_ID_TAG = "ezpz.run_id"
CURSOR_TAG = "ezpz.sync.offset"
MODE_TAG = "ezpz.sync.mode"  # "ordered" (one request at a time) or "parallel"
DEFAULT_WORKERS = 1  # ordered: exact on every store; more only helps over slow links
DEFAULT_EXPERIMENT = "ezpz-sync"
# MLflow's log_batch limit counts metrics, params and tags together (1000); a
# request that carries the cursor tag therefore holds 999 metric values. With
# 1000 values plus the tag, MlflowClient splits the call in two requests (999
# values + the tag, then 1 value): twice the requests, and the cursor would land
# before the last value.
MAX_ENTITIES_PER_REQUEST = 1000
MAX_METRICS_PER_REQUEST = MAX_ENTITIES_PER_REQUEST - 1
STATE_SUFFIX = ".sync.json"
KNOWN_BACKENDS = ("mlflow", "wandb", "csv")


class SyncError(RuntimeError):
    """A sync could not complete (server unreachable, refused request, ...)."""


@dataclass
class SyncResult:
    """What one backend's sync did (or, with ``dry_run``, would do)."""

    backend: str
    target: str = ""
    rows: int = 0
    values_sent: int = 0
    values_skipped: int = 0
    requests: int = 0
    params: int = 0
    artifacts: int = 0
    created: bool = False
    status: str | None = None
    notes: list[str] = field(default_factory=list)

    def describe(self, dry_run: bool) -> str:
        verb = "would send" if dry_run else "sent"
        parts = [
            f"{self.backend}: {verb} {self.values_sent} metric values from {self.rows} rows",
            f"{self.values_skipped} already there",
        ]
        if self.requests:
            parts.append(f"{self.requests} requests")
        if self.params:
            parts.append(f"{self.params} params")
        if self.artifacts:
            parts.append(f"{self.artifacts} artifacts")
        text = ", ".join(parts)
        if self.target:
            text += f" -> {self.target}" + (" (new run)" if self.created else "")
        if self.status:
            text += f"; run status {self.status}"
        return text + "".join(f"\n  {note}" for note in self.notes)


# -- reading --------------------------------------------------------------
@dataclass
class RunFacts:
    """What sync needs from the log besides the rows."""

    events: list[dict[str, Any]]
    config: dict[str, Any]
    world_size: int | None
    run_name: str | None
    state: str | None
    end: int  # byte offset after the last complete line


def read_facts(info: RunInfo) -> RunFacts:
    """Events, config and state from one pass over the JSONL; raises for foreign files."""
    events: list[dict[str, Any]] = []
    rows = skipped = 0
    end = 0
    for line in iter_lines(info.jsonl):
        end = line.end
        if line.is_event:
            events.append(line.record)  # type: ignore[arg-type]
        elif line.is_row:
            rows += 1
        else:
            skipped += 1
    check_ezpz_log(info.jsonl, [None] * rows, events, skipped)
    start = start_event(events) or {}
    config = start.get("config") if isinstance(start.get("config"), dict) else None
    if config is None and info.outdir is not None and (info.outdir / "config.json").is_file():
        try:
            loaded = json.loads((info.outdir / "config.json").read_text())
            config = loaded if isinstance(loaded, dict) else None
        except (OSError, ValueError):
            config = None
    config = _redact(config or {})
    world = start.get("world_size")
    state = run_state(events)
    if state is None and info.outdir is not None and (info.outdir / "report.md").is_file():
        state = FINISHED  # an older log without events, finalized
    return RunFacts(
        events=events,
        config=config,
        world_size=world if isinstance(world, int) else None,
        run_name=start.get("run_name") or info.run_name,
        state=state,
        end=end,
    )


def _redact(config: dict[str, Any]) -> dict[str, Any]:
    try:
        from ezpz._redact import redact_config
    except ImportError:  # pragma: no cover - _redact.py not there yet
        return config
    return redact_config(config)


def iter_rows(path: Path, start: int, stop: int) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(end offset, row)`` for every metric row in ``[start, stop)``."""
    for line in iter_lines(path, start, stop):
        if line.is_row:
            yield line.end, line.record  # type: ignore[misc]


def row_metrics(row: Mapping[str, Any], name: Callable[[str], str]) -> dict[str, float]:
    """A row's scalar metrics under their MLflow names (``X`` -> ``X/local`` beside stats)."""
    with_stats = stat_bases(row)
    out: dict[str, float] = {}
    for key, raw in row.items():
        if key in (STEP_FIELD, TIME_FIELD, EVENT_FIELD):
            continue
        value = to_float(raw)
        if value is None:  # vector metrics: MLflow has no place for them (live skips them too)
            continue
        out[name(f"{key}/local" if key in with_stats else key)] = value
    return out


# -- mlflow ---------------------------------------------------------------
def _experiment_name(explicit: str | None) -> str:
    from ezpz.tracker.project_name import MLFLOW_EXPERIMENT_VARS, _first_set

    return (
        (explicit or "").strip()
        or _first_set(MLFLOW_EXPERIMENT_VARS, os.environ)
        or (DEFAULT_EXPERIMENT)
    )


def _mask(uri: str) -> str:
    try:
        from ezpz._redact import mask_url
    except ImportError:  # pragma: no cover
        return uri
    return mask_url(uri)


def _check_reachable(uri: str, timeout: float = 10.0) -> None:
    """Fail fast with a clear message when an http(s) tracking server does not answer."""
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname, port), timeout=timeout):
            pass
    except OSError as exc:
        raise SyncError(
            f"cannot reach the MLflow server at {_mask(uri)} ({exc.strerror or exc}); "
            "nothing was sent"
        ) from None


def find_mlflow_run(client: Any, run_id: str) -> Any | None:
    """The MLflow run tagged ``ezpz.run_id=<run_id>`` in any active experiment, or None."""
    from mlflow.entities import ViewType

    ids = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ACTIVE_ONLY)]
    for i in range(0, len(ids), 100):
        runs = client.search_runs(
            ids[i : i + 100],
            filter_string=f"tags.`{RUN_ID_TAG}` = '{run_id}'",
            run_view_type=ViewType.ACTIVE_ONLY,
            max_results=5,
        )
        if runs:
            return runs[0]
    return None


def _latest_steps(run: Any) -> dict[str, int]:
    """The highest step MLflow holds per metric (its ``latest_metrics``)."""
    metrics = getattr(run.data, "_metric_objs", None) or []
    return {m.key: int(m.step) for m in metrics}


class _Sender:
    """Sends metric batches in file order; tracks the confirmed offset (the cursor).

    With one worker, each request carries its own end offset as the cursor tag
    (MLflow writes a batch's metrics before its tags). With several, requests
    overlap: a request carries the cursor tag only when the offset up to which
    every earlier request has completed has moved on and no other request with
    the tag is in flight (so the tag never goes back: a slow request cannot
    land an older offset after a newer one); the final offset is set once all
    are done.
    """

    def __init__(
        self, client: Any, run_id: str | None, cursor: int, workers: int, headers: Any
    ) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.client, self.run_id, self.headers = client, run_id, headers
        self.confirmed = self.tagged = cursor
        self.workers = max(1, workers)
        self.pool = ThreadPoolExecutor(self.workers) if self.workers > 1 else None
        self.inflight: deque[tuple[Any, int]] = deque()
        self.tag_request: Any = None  # the in-flight request carrying the cursor tag
        self.requests = 0

    def _call(self, metrics: list[Any], tag: int | None) -> None:
        from mlflow.entities import RunTag

        from ezpz.tracker.mlflow_auth import request_scope

        tags = [RunTag(CURSOR_TAG, str(tag))] if tag is not None else []
        with request_scope(self.headers):
            self.client.log_batch(self.run_id, metrics=metrics, tags=tags)

    def send(self, metrics: list[Any], end: int) -> None:
        self.requests += 1
        if self.pool is None:
            self._call(metrics, end)
            self.confirmed = self.tagged = end
            return
        self._reap(block=len(self.inflight) >= self.workers)
        tag = None
        if self.confirmed > self.tagged and (self.tag_request is None or self.tag_request.done()):
            tag = self.tagged = self.confirmed
        future = self.pool.submit(self._call, metrics, tag)
        if tag is not None:
            self.tag_request = future
        self.inflight.append((future, end))

    def _reap(self, block: bool) -> None:
        while self.inflight and (block or self.inflight[0][0].done()):
            future, end = self.inflight.popleft()
            future.result()  # raises the request's error
            self.confirmed = end
            block = False

    def close(self, ok: bool, end: int) -> None:
        """Wait for every request; on success the cursor tag becomes ``end``.

        ``end``: the offset after the last row read (rows with no metric value
        after the last request move the cursor too).
        """
        if self.pool is not None:
            try:
                if ok:
                    while self.inflight:
                        self._reap(block=True)
            finally:
                self.pool.shutdown(wait=True, cancel_futures=True)
        if ok:
            self.confirmed = max(self.confirmed, end)
        if ok and self.tagged != self.confirmed:
            from ezpz.tracker.mlflow_auth import request_scope

            with request_scope(self.headers):
                self.client.set_tag(self.run_id, CURSOR_TAG, str(self.confirmed))
            self.tagged = self.confirmed
            self.requests += 1


def sync_mlflow(
    info: RunInfo,
    facts: RunFacts,
    *,
    tracking_uri: str | None = None,
    experiment: str | None = None,
    dry_run: bool = False,
    artifacts: bool = True,
    workers: int = DEFAULT_WORKERS,
    progress: Callable[[SyncResult], None] | None = None,
) -> SyncResult:
    """Replay ``info``'s JSONL into MLflow (see the module docstring).

    ``workers=1`` (the default) sends strictly in order, exact on any store.
    ``workers`` > 1 keeps that many requests in flight (for a distant server
    with a PostgreSQL/MySQL store); the values after the cursor are then
    re-sent on a resumed sync and MLflow's SQL store keeps each identical
    point once.
    """
    given = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if given:  # an unreachable server fails at once, before seconds of importing mlflow
        _check_reachable(given)
    from ezpz.tracker.mlflow_auth import (  # imports mlflow
        auth_headers,
        ensure_provider_registered,
        load_credentials,
        redact,
        request_scope,
    )

    load_credentials()
    try:
        import mlflow
        from mlflow import MlflowClient
    except ImportError as exc:
        raise SyncError("syncing to MLflow needs mlflow: pip install mlflow") from exc
    ensure_provider_registered()
    uri = tracking_uri or mlflow.get_tracking_uri()
    if uri != given:
        _check_reachable(uri)
    result = SyncResult("mlflow")
    client = MlflowClient(tracking_uri=uri)
    try:
        with request_scope(auth_headers()):
            _sync_mlflow(
                client, info, facts, uri, experiment, dry_run, artifacts, workers, result, progress
            )
    except SyncError:
        raise
    except Exception as exc:
        message = redact(f"{type(exc).__name__}: {exc}")[:800]
        raise SyncError(
            f"mlflow at {_mask(uri)}: {message}"
            + (
                f" ({result.values_sent} values were sent; run the same command again to continue)"
                if result.values_sent
                else ""
            )
        ) from None
    return result


def _sync_mlflow(
    client: Any,
    info: RunInfo,
    facts: RunFacts,
    uri: str,
    experiment: str | None,
    dry_run: bool,
    artifacts: bool,
    workers: int,
    result: SyncResult,
    progress: Callable[[SyncResult], None] | None,
) -> None:
    from mlflow.entities import Metric, Param

    from ezpz.tracker.mlflow_auth import auth_headers
    from ezpz.tracker.mlflow_backend import (
        MAX_PARAM_VALUE_LENGTH,
        MAX_PARAMS_PER_REQUEST,
        flatten_params,
        mlflow_name,
    )

    run = find_mlflow_run(client, info.run_id)
    cursor = 0
    latest: dict[str, int] = {}
    present_params: dict[str, str] = {}
    ordered = True  # the previous sync sent strictly in order
    if run is not None:
        mlflow_run_id = run.info.run_id
        ordered = run.data.tags.get(MODE_TAG, "ordered") == "ordered"
        cursor_text = run.data.tags.get(CURSOR_TAG)
        cursor = int(cursor_text) if cursor_text and cursor_text.isdigit() else 0
        latest = _latest_steps(run)
        present_params = dict(run.data.params)
        result.target = f"{_mask(uri)} run {mlflow_run_id}"
    else:
        name = _experiment_name(experiment)
        result.created = True
        result.target = f"{_mask(uri)} experiment {name!r}"
        mlflow_run_id = None
        if not dry_run:
            exp = client.get_experiment_by_name(name)
            exp_id = exp.experiment_id if exp is not None else client.create_experiment(name)
            tags = {
                RUN_ID_TAG: info.run_id,
                "mlflow.source.name": "ezpz-history sync",
                "mlflow.source.type": "LOCAL",
            }
            if facts.world_size is not None:
                tags["ezpz.world_size"] = str(facts.world_size)
            start_ms = _first_time_ms(info.jsonl)
            created = client.create_run(
                exp_id, run_name=facts.run_name or info.run_id, tags=tags, start_time=start_ms
            )
            mlflow_run_id = created.info.run_id
            result.target = f"{_mask(uri)} run {mlflow_run_id} in experiment {name!r}"
    if cursor > facts.end:  # the JSONL was replaced by a shorter one: start over
        result.notes.append(f"cursor {cursor} is past the end of the log; syncing from the start")
        cursor = 0

    # Params: config.* (redacted) and the run's identity; MLflow params are write-once.
    params = flatten_params(facts.config, "config") if facts.config else {}
    params["ezpz.run_id"] = info.run_id
    if facts.world_size is not None:
        params["ezpz.world_size"] = str(facts.world_size)
    todo = {}
    for key, value in params.items():
        name, value = mlflow_name(key), value[:MAX_PARAM_VALUE_LENGTH]
        if name not in present_params:
            todo[name] = value
        elif present_params[name] != value:
            result.notes.append(f"param {name!r} differs in MLflow; params are write-once, kept")
    result.params = len(todo)
    items = list(todo.items())
    if not dry_run:
        for i in range(0, len(items), MAX_PARAMS_PER_REQUEST):
            chunk = items[i : i + MAX_PARAMS_PER_REQUEST]
            client.log_batch(mlflow_run_id, params=[Param(k, v) for k, v in chunk])
            result.requests += 1

    # Metrics, in file order, from the cursor on. Right after the cursor, at most
    # two requests' worth of values may be in MLflow already (a row split over two
    # requests, a request whose tag did not land); a run logged live (found by its
    # tag, no cursor) may hold any prefix: compare with MLflow's latest steps there.
    # After an overlapping (workers > 1) sync, what follows the cursor is not a
    # prefix: it is re-sent, and MLflow's SQL store keeps identical points once.
    window_left: float = 2 * MAX_METRICS_PER_REQUEST if ordered else 0
    if run is not None and cursor == 0 and latest and MODE_TAG not in run.data.tags:
        window_left = float("inf")
    sender = None
    if not dry_run:
        headers = auth_headers()
        sender = _Sender(client, mlflow_run_id, cursor, workers, headers)
        sender.requests = result.requests  # the params' requests count too
        mode = "ordered" if sender.workers == 1 else "parallel"
        if run is None or run.data.tags.get(MODE_TAG) != mode:
            client.set_tag(mlflow_run_id, MODE_TAG, mode)
    batch: list[Any] = []
    batch_end = cursor  # end offset of the last complete row in `batch`
    names: dict[str, str] = {}

    def name_of(key: str) -> str:
        hit = names.get(key)
        if hit is None:
            hit = names[key] = mlflow_name(key)
        return hit

    def flush() -> None:
        nonlocal batch
        if not batch:
            return
        if sender is not None:
            sender.send(batch, batch_end)
            result.requests = sender.requests
        result.values_sent += len(batch)
        batch = []
        if progress is not None:
            progress(result)

    ok = False
    try:
        for end, row in iter_rows(info.jsonl, cursor, facts.end):
            result.rows += 1
            step = row[STEP_FIELD]
            t = row.get(TIME_FIELD)
            ts = int(t * 1000) if isinstance(t, (int, float)) else int(time.time() * 1000)
            for key, metric_value in row_metrics(row, name_of).items():
                if window_left > 0:
                    window_left -= 1
                    if key in latest and step <= latest[key]:
                        result.values_skipped += 1
                        continue
                batch.append(Metric(key, metric_value, ts, step))
                if len(batch) == MAX_METRICS_PER_REQUEST:
                    flush()
            batch_end = end
        flush()
        ok = True
    finally:
        if sender is not None:
            sender.close(ok, batch_end)
            result.requests = sender.requests

    if artifacts and info.outdir is not None:
        result.artifacts = _sync_artifacts(client, mlflow_run_id, info.outdir, dry_run)
    status = {FINISHED: "FINISHED", INTERRUPTED: "KILLED"}.get(facts.state or "")
    if facts.state is None and not facts.events:
        status = "FINISHED"  # an old log without lifecycle events: nothing more will come
    if status is not None:
        result.status = status
        if not dry_run:
            end_ms = _last_time_ms(info.jsonl, facts.end)
            client.set_terminated(mlflow_run_id, status, end_time=end_ms)


def _first_time_ms(path: Path) -> int | None:
    for line in iter_lines(path, 0, 1 << 16):
        t = (line.record or {}).get(TIME_FIELD)
        if isinstance(t, (int, float)):
            return int(t * 1000)
    return None


def _last_time_ms(path: Path, end: int) -> int | None:
    start = max(0, end - (1 << 16))
    last = None
    for line in iter_lines(path, start, end):
        t = (line.record or {}).get(TIME_FIELD)
        if isinstance(t, (int, float)):
            last = int(t * 1000)
    return last


def finalize_files(outdir: Path) -> list[Path]:
    """finalize()'s files that a live run uploads as artifacts, in its order.

    The JSONL copy, the datasets (``*.h5`` at the root), the report and the
    per-rank ``ranks.h5``. (The time-stamped ``*-rank0.jsonl`` link finalize
    also uploads points at the same log as ``metrics.jsonl``: not sent twice.)
    """
    found = [outdir / "metrics.jsonl"] if (outdir / "metrics.jsonl").is_file() else []
    found += [p for p in sorted(outdir.glob("*.h5")) if p.name != "ranks.h5" and p.is_file()]
    found += [outdir / n for n in ("report.md", "ranks.h5") if (outdir / n).is_file()]
    return found


def finalize_plots(outdir: Path) -> list[tuple[str, Path]]:
    """finalize()'s matplotlib PNGs with the key a live run logs each under.

    ``plots/mplot/<group>/<stem>.png`` -> ``plots/<group>/<stem>``; the
    unprefixed group's directory is ``history`` and its key ``plots/<stem>``.
    """
    mplot = outdir / "plots" / "mplot"
    if not mplot.is_dir():
        return []
    found: list[tuple[str, Path]] = []
    for png in sorted(mplot.rglob("*.png")):
        group = png.parent.relative_to(mplot).as_posix()
        group = "" if group in (".", "history") else group
        found.append((posixpath.join("plots", group, png.stem), png))
    return found


def finalize_artifacts(outdir: Path) -> list[tuple[Path, str | None]]:
    """finalize()'s files in ``outdir`` and where MLflow puts them (as a live run does).

    Files at the artifact root; each PNG in its image key's folder (the live
    MLflow backend's ``log_image``: ``plots/train/loss`` -> ``plots/train/``).
    """
    from ezpz.tracker.mlflow_backend import mlflow_name

    found: list[tuple[Path, str | None]] = [(p, None) for p in finalize_files(outdir)]
    for key, png in finalize_plots(outdir):
        found.append((png, posixpath.dirname(mlflow_name(key)) or "plots"))
    return found


def _signature(path: Path) -> str:
    st = path.stat()
    return f"{st.st_size}:{st.st_mtime_ns}"


def _sync_artifacts(client: Any, run_id: str | None, outdir: Path, dry_run: bool) -> int:
    files = finalize_artifacts(outdir)
    if dry_run or run_id is None:
        return len(files)
    present: dict[str | None, dict[str, int | None]] = {}
    sent = 0
    for path, folder in files:
        if folder not in present:
            try:
                listing = client.list_artifacts(run_id, folder)
            except Exception:
                listing = []
            present[folder] = {posixpath.basename(a.path): a.file_size for a in listing}
        if present[folder].get(path.name) == path.stat().st_size:
            continue  # already uploaded
        client.log_artifact(run_id, str(path), artifact_path=folder)
        sent += 1
    return sent


# -- local sync state (wandb) ---------------------------------------------
def state_path(info: RunInfo) -> Path:
    return info.jsonl.with_name(info.jsonl.name + STATE_SUFFIX)


def load_state(info: RunInfo) -> dict[str, Any]:
    try:
        data = json.loads(state_path(info).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def save_state(info: RunInfo, state: dict[str, Any]) -> None:
    from ezpz._files import atomic_write_text

    atomic_write_text(state_path(info), json.dumps(state, indent=1, sort_keys=True) + "\n")


# -- wandb ----------------------------------------------------------------
def sync_wandb(
    info: RunInfo,
    facts: RunFacts,
    *,
    project: str | None = None,
    dry_run: bool = False,
    wandb_dir: str | None = None,
    artifacts: bool = True,
    progress: Callable[[SyncResult], None] | None = None,
) -> SyncResult:
    """Replay into the W&B run whose id is the ezpz run id (offline per WANDB_MODE).

    With ``artifacts`` and the run's outdir present, finalize()'s outputs go
    as the live wandb backend sends them: each PNG as a ``wandb.Image`` under
    its plot key (``plots/<group>/<stem>``) in the last step's row, each file
    (``metrics.jsonl``, datasets, ``report.md``, ``ranks.h5``) as an artifact
    named after the file, of type ``ezpz-output``. What was sent is kept in
    ``<jsonl>.sync.json`` (size and mtime per file), so a second sync sends
    none again and a file finalize rewrote goes again.
    """
    result = SyncResult("wandb")
    state = load_state(info)
    mine = state.get("wandb", {}) if isinstance(state.get("wandb"), dict) else {}
    cursor = int(mine.get("offset", 0))
    last_step = mine.get("last_step")
    sent_files = mine.get("files", {}) if isinstance(mine.get("files"), dict) else {}
    if cursor > facts.end:
        cursor, last_step, sent_files = 0, None, {}
    rows = list(iter_rows(info.jsonl, cursor, facts.end))
    rows = [(e, r) for e, r in rows if last_step is None or r[STEP_FIELD] > last_step] or rows[:0]
    result.rows = len(rows)
    result.values_sent = sum(
        1 for _, r in rows for k, v in r.items() if k[0] != "_" and to_float(v) is not None
    )
    images: list[tuple[str, Path]] = []
    files: list[Path] = []
    if artifacts and info.outdir is not None:
        outdir = info.outdir

        def new(path: Path) -> bool:
            return sent_files.get(path.relative_to(outdir).as_posix()) != _signature(path)

        images = [(key, png) for key, png in finalize_plots(outdir) if new(png)]
        files = [path for path in finalize_files(outdir) if new(path)]
    result.artifacts = len(images) + len(files)
    result.target = f"wandb run {info.run_id}"
    if dry_run:
        return result
    if not (rows or images or files) and "offset" in mine and mine.get("state") == facts.state:
        return result  # nothing new since the last sync: no run to resume at all
    from ezpz.tracker.project_name import wandb_project
    from ezpz.tracker.wandb_backend import _ARTIFACT_BAD_CHARS, _import_wandb, wandb_disabled

    if wandb_disabled():
        raise SyncError("wandb is disabled by WANDB_DISABLED")
    wandb = _import_wandb()
    if wandb_dir is None and info.outdir is not None and not os.environ.get("WANDB_DIR"):
        wandb_dir = str(info.outdir)
    kwargs: dict[str, Any] = {
        "id": info.run_id,
        "resume": "allow",
        "project": wandb_project(project) if project or _wandb_project_env() else "ezpz-sync",
        "name": facts.run_name or info.run_id,
        "config": facts.config,
    }
    if wandb_dir:
        os.makedirs(wandb_dir, exist_ok=True)
        kwargs["dir"] = wandb_dir
    try:
        run = wandb.init(**kwargs)
    except Exception as exc:
        raise SyncError(f"wandb: could not start run {info.run_id}: {exc}") from None
    result.target = f"wandb run {info.run_id} ({getattr(run.settings, 'mode', '?')})"
    offset = cursor

    def save() -> None:
        entry = {
            "offset": offset,
            "last_step": last_step,
            "files": sent_files,
            "state": facts.state,
        }
        save_state(info, {**state, "wandb": entry})

    try:
        for end, row in rows:
            values = {k: to_float(v) for k, v in row.items() if k[0] != "_"}
            run.log({k: v for k, v in values.items() if v is not None}, step=row[STEP_FIELD])
            offset, last_step = end, row[STEP_FIELD]
            result.requests += 1
            if result.requests % 1000 == 0:
                save()
        if images or files:
            assert info.outdir is not None
            outdir = info.outdir
            # finalize logs its images into the held last row; a run whose rows
            # went in an earlier sync gets them in wandb's next row.
            media = {key: wandb.Image(str(png), caption=png.stem) for key, png in images}
            if media and rows:
                run.log(media, step=last_step)
            elif media:
                run.log(media)
            for path in files:
                label = _ARTIFACT_BAD_CHARS.sub("-", path.name) or "ezpz-output"
                artifact = wandb.Artifact(name=label, type="ezpz-output")
                artifact.add_file(str(path))
                run.log_artifact(artifact)
            for path in [png for _, png in images] + files:
                sent_files[path.relative_to(outdir).as_posix()] = _signature(path)
    finally:
        if facts.state == INTERRUPTED:
            run.finish(exit_code=143)
        else:
            run.finish()
        save()
    if progress is not None:
        progress(result)
    return result


def _wandb_project_env() -> bool:
    return any(os.environ.get(v) for v in ("WB_PROJECT", "WANDB_PROJECT", "WB_PROJECT_NAME"))


# -- csv ------------------------------------------------------------------
def sync_csv(
    info: RunInfo, facts: RunFacts, *, csv_dir: str | None = None, dry_run: bool = False
) -> SyncResult:
    """Rebuild ``metrics.csv`` and ``config.json`` (atomically replaced) in ``csv_dir``."""
    import tempfile

    from ezpz.tracker.csv_backend import CONFIG_FILE, METRICS_FILE, CSVBackend

    target = Path(csv_dir) if csv_dir else (info.outdir or info.jsonl.with_suffix(""))
    result = SyncResult("csv", target=str(target))
    rows = list(iter_rows(info.jsonl, 0, facts.end))
    result.rows = len(rows)
    result.values_sent = sum(
        1 for _, r in rows for k, v in r.items() if k[0] != "_" and to_float(v) is not None
    )
    if dry_run:
        return result
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target, prefix=".ezpz-sync-") as tmp:
        backend = CSVBackend(outdir=tmp, config=facts.config or None, rank=0)
        for _, row in rows:
            values = {k: to_float(v) for k, v in row.items() if k[0] != "_"}
            backend.log({k: v for k, v in values.items() if v is not None}, step=row[STEP_FIELD])
        backend.finish()
        for name in (METRICS_FILE, CONFIG_FILE):
            if (Path(tmp) / name).exists():
                os.replace(Path(tmp) / name, target / name)
    return result


# -- driver ---------------------------------------------------------------
def parse_backends(text: str) -> list[str]:
    """``"mlflow,wandb"`` -> ``["mlflow", "wandb"]``; raises ValueError for unknown names."""
    names = [n.strip().lower() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in KNOWN_BACKENDS]
    if unknown or not names:
        raise ValueError(
            f"unknown backend(s) {', '.join(unknown) or '(none given)'}; "
            f"sync knows {', '.join(KNOWN_BACKENDS)}"
        )
    return list(dict.fromkeys(names))


def sync(
    info: RunInfo,
    backends: Sequence[str],
    *,
    dry_run: bool = False,
    tracking_uri: str | None = None,
    experiment: str | None = None,
    project: str | None = None,
    csv_dir: str | None = None,
    artifacts: bool = True,
    out: TextIO | None = None,
    progress_every: float = 10.0,
    workers: int = DEFAULT_WORKERS,
) -> list[SyncResult]:
    """Sync ``info`` into each backend; raises :class:`SyncError` on the first failure.

    With ``out``, one line per backend at the end, and a progress line every
    ``progress_every`` seconds during long syncs.
    """
    facts = read_facts(info)
    last = [time.monotonic()]

    def progress(res: SyncResult) -> None:
        now = time.monotonic()
        if out is not None and now - last[0] >= progress_every:
            last[0] = now
            out.write(f"{res.backend}: {res.values_sent} values sent so far ({res.rows} rows)\n")
            out.flush()

    results: list[SyncResult] = []
    for name in backends:
        if name == "mlflow":
            res = sync_mlflow(
                info,
                facts,
                tracking_uri=tracking_uri,
                experiment=experiment,
                dry_run=dry_run,
                artifacts=artifacts,
                workers=workers,
                progress=progress,
            )
        elif name == "wandb":
            res = sync_wandb(info, facts, project=project, dry_run=dry_run, artifacts=artifacts)
        else:
            res = sync_csv(info, facts, csv_dir=csv_dir, dry_run=dry_run)
        results.append(res)
        if out is not None:
            out.write(res.describe(dry_run) + "\n")
            out.flush()
    return results


__all__ = [
    "CURSOR_TAG",
    "RUN_ID_TAG",
    "NotAnEzpzLogError",
    "SyncError",
    "SyncResult",
    "find_mlflow_run",
    "parse_backends",
    "row_metrics",
    "sync",
    "sync_csv",
    "sync_mlflow",
    "sync_wandb",
]
