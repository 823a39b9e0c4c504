"""Weights & Biases backend: one real run on rank 0, nothing on other ranks.

Rank 0 starts a run (``WANDB_MODE`` picks online or offline), records where
it ran in the run config under ``ezpz`` (host, torch and ezpz versions, world
size, scheduler job and hostfile), logs the user config, every update with
its step, and on finalize the history table and plot images. Other ranks do
not import wandb at all. ``WANDB_DISABLED=1`` turns the backend into a logged
no-op. When an online run cannot start (no API key, no network), the run is
started offline instead, with a warning, so nothing is lost: upload it later
with ``wandb sync``.

Updates that share a step become one wandb row, whatever their order (a
train update then an eval update at the same step, or the reverse): the
newest step's row is held, merged into, and sent committed when a later step
arrives or at :meth:`WandbBackend.finish` (issue 12 item 17).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

from ezpz._redact import protect_logger, redact_config
from ezpz.tracker.base import TrackerBackend
from ezpz.tracker.project_name import wandb_project
from ezpz.tracker.sysinfo import system_info
from ezpz.tracker.wandb_state import active_run as active_run
from ezpz.tracker.wandb_state import wandb_disabled as wandb_disabled

logger = logging.getLogger(__name__)
protect_logger(logger)  # URL credentials and tokens never reach the log

_ARTIFACT_BAD_CHARS = re.compile(r"[^\w.\-]")


def _import_wandb() -> Any:
    try:
        import wandb
    except ImportError as exc:
        raise ImportError(
            "the 'wandb' tracker backend needs wandb: pip install wandb "
            "(or pip install 'ezpz-history[wandb]')"
        ) from exc
    return wandb


def start_run(
    project_name: str | None = None,
    outdir: str | None = None,
    world_size: int | None = None,
    **init_kwargs: Any,
) -> Any | None:
    """``wandb.init`` with ezpz's project resolution and system info.

    Falls back to an offline run (warning) when an online one cannot start,
    and returns None (warning) when no run can start at all.
    """
    wandb = _import_wandb()
    kwargs: dict[str, Any] = {"project": wandb_project(project_name), **init_kwargs}
    config = redact_config(dict(kwargs.pop("config", None) or {}))
    config.setdefault("ezpz", system_info(world_size=world_size))
    kwargs["config"] = config
    if outdir and "dir" not in kwargs and not os.environ.get("WANDB_DIR"):
        os.makedirs(outdir, exist_ok=True)
        kwargs["dir"] = outdir
    try:
        return wandb.init(**kwargs)
    except Exception as exc:
        mode = str(kwargs.get("mode") or os.environ.get("WANDB_MODE") or "online")
        if mode != "online":
            logger.warning("wandb: could not start a %s run (%s); wandb disabled", mode, exc)
            return None
        logger.warning(
            "wandb: could not start an online run (%s); logging offline instead "
            "(upload later with `wandb sync <run dir>`)",
            exc,
        )
    try:
        return wandb.init(**{**kwargs, "mode": "offline"})
    except Exception as exc:
        logger.warning("wandb: could not start an offline run either (%s); wandb disabled", exc)
        return None


class WandbBackend(TrackerBackend):
    """Logs to a W&B run from rank 0.

    Args:
        project_name: else WB_PROJECT > WANDB_PROJECT > WB_PROJECT_NAME > script name.
        config: user config, logged to the run config.
        outdir: where wandb writes its run directory (unless WANDB_DIR is set).
        run: an existing run to log into (it is not finished by :meth:`finish`).
        **init_kwargs: passed to ``wandb.init`` (entity, name, mode, tags, ...).

    ``.run`` is the ``wandb`` run (None on other ranks or when disabled).
    """

    name = "wandb"

    def __init__(
        self,
        project_name: str | None = None,
        config: Mapping[str, Any] | None = None,
        outdir: str | None = None,
        rank: int | None = None,
        world_size: int | None = None,
        *,
        run: Any | None = None,
        ezpz_run_id: str | None = None,
        run_name: str | None = None,
        resumed: bool = False,
        resume_step: int | None = None,
        **init_kwargs: Any,
    ) -> None:
        if rank is None or world_size is None:
            from ezpz.dist import get_rank, get_world_size

            rank = get_rank() if rank is None else rank
            world_size = get_world_size() if world_size is None else world_size
        self.rank, self.world_size = int(rank), int(world_size)
        self.run: Any = None
        self.owns_run = False
        self._last_step: int | None = None
        # Updates that share a step reach wandb as one row: the row of the
        # newest step is held and sent when the step changes (or at
        # finish), whatever order the updates of that step came in.
        self._row: dict[str, Any] = {}
        self._row_step: int | None = None
        # A resumed run: steps up to the last recorded one were sent by an earlier job.
        self._resume_step = resume_step if resumed else None
        self._exit_code = 0
        # One run identity: the wandb run id is ezpz's run id, resumed by a restarted job.
        if ezpz_run_id is not None and "id" not in init_kwargs:
            init_kwargs["id"] = ezpz_run_id
            init_kwargs.setdefault("resume", "allow")
        if run_name is not None:
            init_kwargs.setdefault("name", run_name)
        self._warned: set[str] = set()
        if self.rank != 0:
            return
        if wandb_disabled():
            logger.info("wandb: disabled by WANDB_DISABLED; the wandb backend does nothing")
            return
        self._wandb = _import_wandb()
        run = run if run is not None else active_run()
        if run is not None:
            self.run = run
            self.run.config.update(
                {"ezpz": system_info(world_size=self.world_size)}, allow_val_change=True
            )
        else:
            self.run = start_run(
                project_name, outdir=outdir, world_size=self.world_size, **init_kwargs
            )
            self.owns_run = self.run is not None
        if self.run is not None and config:
            self.log_config(config)

    @property
    def enabled(self) -> bool:
        return self.run is not None

    def log(self, metrics: Mapping[str, Any], step: int | None = None, commit: bool = True) -> None:
        if self.run is None:
            return
        if step is not None:
            if self._resume_step is not None and step <= self._resume_step:
                self._warn_once(
                    "resume",
                    "wandb: the resumed run logs step %d again (an earlier job logged up to "
                    "step %d); wandb keeps the first values, so repeated steps are not sent "
                    "(the JSONL and the ezpz outputs hold the new ones)",
                    step,
                    self._resume_step,
                )
                return
            if self._last_step is not None and step < self._last_step:
                # wandb would drop it with a warning per call; say it once.
                self._warn_once(
                    "step",
                    "wandb: step %d is below the last logged step %d; wandb only accepts "
                    "increasing steps, so such rows are not sent (the JSONL keeps them)",
                    step,
                    self._last_step,
                )
                return
            if step == self._row_step:  # another update of the same step: one row
                self._row.update(metrics)
                return
            self._last_step = step
            self._send_row()
            self._row, self._row_step = dict(metrics), step
            return
        if self._row_step is not None:  # no step (a StopWatch): joins the held step's row
            self._row.update(metrics)
            return
        self.run.log(dict(metrics), commit=commit)  # nothing held: wandb numbers it

    def _send_row(self) -> None:
        """Send the held row (every update of one step, merged) as one committed wandb row."""
        if self._row_step is None or self.run is None:
            return
        row, step = self._row, self._row_step
        self._row, self._row_step = {}, None
        self.run.log(row, step=step, commit=True)

    def _log_object(self, key: str, value: Any) -> None:
        """A table or image: into the held row (same step) when there is one."""
        if self._row_step is not None:
            self._row[key] = value
        else:
            self.run.log({key: value})

    def log_config(self, config: Mapping[str, Any]) -> None:
        if self.run is not None:
            self.run.config.update(redact_config(dict(config)), allow_val_change=True)

    def log_table(self, key: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        if self.run is None:
            return
        table = self._wandb.Table(columns=list(columns), data=[list(row) for row in rows])
        self._log_object(key, table)

    def log_image(self, key: str, path: str, caption: str | None = None) -> None:
        if self.run is not None:
            self._log_object(key, self._wandb.Image(path, caption=caption))

    def log_artifact(self, path: str, name: str | None = None) -> None:
        if self.run is None:
            return
        label = _ARTIFACT_BAD_CHARS.sub("-", name or os.path.basename(os.path.normpath(path)))
        artifact = self._wandb.Artifact(name=label or "ezpz-output", type="ezpz-output")
        if os.path.isdir(path):
            artifact.add_dir(path)
        else:
            artifact.add_file(path)
        self.run.log_artifact(artifact)

    def watch(self, model: Any, **kwargs: Any) -> None:
        if self.run is not None:
            self.run.watch(model, **kwargs)

    def set_outdir(self, outdir: str | os.PathLike[str]) -> None:
        """Nothing to move: this backend writes no files of its own in ``outdir``."""

    def finish(self) -> None:
        """Finish the run ezpz started; a run adopted from the user stays open."""
        self._send_row()
        run, self.run = self.run, None
        if run is not None and self.owns_run:
            if self._exit_code:
                run.finish(exit_code=self._exit_code)
            else:
                run.finish()

    def mark_interrupted(self) -> None:
        """A signal ended the run: it finishes with exit code 1 (shown as failed/crashed)."""
        self._exit_code = 1

    def _warn_once(self, kind: str, message: str, *args: Any) -> None:
        if kind not in self._warned:
            self._warned.add(kind)
            logger.warning(message, *args)


def setup_wandb(
    project_name: str | None = None,
    config: Mapping[str, Any] | None = None,
    outdir: str | None = None,
    *,
    rank: int | None = None,
    world_size: int | None = None,
    **init_kwargs: Any,
) -> Any | None:
    """Start a W&B run now, outside of History; returns it.

    Rank 0 gets a real run (same project resolution and system info as the
    backend). Other ranks get wandb's disabled no-op run (no files, no
    network), so ``run.log(...)`` in user code is harmless everywhere.
    Returns None when wandb is disabled (``WANDB_DISABLED``) or cannot start.
    A History created afterwards without ``backends=`` adopts this run.
    """
    if rank is None or world_size is None:
        from ezpz.dist import get_rank, get_world_size

        rank = get_rank() if rank is None else rank
        world_size = get_world_size() if world_size is None else world_size
    if wandb_disabled():
        logger.info("wandb: disabled by WANDB_DISABLED")
        return None
    wandb = _import_wandb()
    if rank != 0:
        return wandb.init(mode="disabled")
    if config:
        init_kwargs["config"] = redact_config(dict(config))
    return start_run(project_name, outdir=outdir, world_size=world_size, **init_kwargs)
