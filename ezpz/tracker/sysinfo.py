"""What a run records about where it ran: host, versions, world size, job.

Only a fixed list of facts is collected (never the whole environment), so no
credential that lives in an environment variable can end up in a run's
config or params. Importing torch just to read its version would cost
seconds, so the version comes from the imported module when there is one and
from the installed package metadata otherwise.
"""

from __future__ import annotations

import os
import platform
import socket
import sys
from importlib import metadata
from typing import Any

# Scheduler job ids, checked in order; the first one set names the scheduler.
_JOB_ID_VARS = (
    ("pbs", "PBS_JOBID"),
    ("slurm", "SLURM_JOB_ID"),
    ("lsf", "LSB_JOBID"),
    ("cobalt", "COBALT_JOBID"),
)
_HOSTFILE_VARS = ("PBS_NODEFILE", "HOSTFILE", "COBALT_NODEFILE")
# A hostfile longer than this is not read to count nodes (it is only named).
_MAX_HOSTFILE_BYTES = 4 << 20


def package_version(name: str) -> str | None:
    """Version of ``name``: from the imported module if any, else package metadata."""
    module = sys.modules.get(name)
    version = getattr(module, "__version__", None) if module is not None else None
    if version is not None:
        return str(version)
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _count_hosts(path: str) -> int | None:
    try:
        if os.path.getsize(path) > _MAX_HOSTFILE_BYTES:
            return None
        with open(path, encoding="utf-8", errors="replace") as fh:
            return len({line.split()[0] for line in fh if line.strip()})
    except OSError:
        return None


def job_info(env: dict[str, str] | None = None) -> dict[str, Any]:
    """Scheduler, job id, hostfile and node count when a batch scheduler started us."""
    env = dict(os.environ) if env is None else env
    info: dict[str, Any] = {}
    for scheduler, var in _JOB_ID_VARS:
        if env.get(var):
            info["scheduler"] = scheduler
            info["job_id"] = env[var]
            break
    for var in _HOSTFILE_VARS:
        path = env.get(var)
        if path:
            info["hostfile"] = path
            nodes = _count_hosts(path)
            if nodes is not None:
                info["num_nodes"] = nodes
            break
    if "num_nodes" not in info and env.get("SLURM_NNODES", "").isdigit():
        info["num_nodes"] = int(env["SLURM_NNODES"])
    return info


def device_kind() -> str:
    """``cuda``, ``xpu``, ``mps`` or ``cpu`` as torch sees it; ``unknown`` when torch
    has not been imported (importing it here would cost seconds)."""
    torch = sys.modules.get("torch")
    if torch is None:
        return "unknown"
    try:
        if torch.cuda.is_available():
            return "cuda"
        xpu = getattr(torch, "xpu", None)
        if xpu is not None and xpu.is_available():
            return "xpu"
        mps = getattr(getattr(torch, "backends", None), "mps", None)
        if mps is not None and mps.is_available():
            return "mps"
    except Exception:  # a broken accelerator runtime: say what torch can still do
        pass
    return "cpu"


def git_branch(start: str | os.PathLike[str] | None = None) -> str | None:
    """The branch checked out in the git work tree around ``start`` (default: cwd).

    Read from ``.git/HEAD`` (no ``git`` subprocess); a detached HEAD gives
    its commit's first 12 hex digits; None outside a work tree.
    """
    path = os.path.abspath(start if start is not None else os.getcwd())
    while True:
        dot_git = os.path.join(path, ".git")
        try:
            if os.path.isfile(dot_git):  # worktrees and submodules: "gitdir: <path>"
                with open(dot_git, encoding="utf-8") as fh:
                    line = fh.readline().strip()
                if line.startswith("gitdir:"):
                    dot_git = os.path.join(path, line.partition(":")[2].strip())
            head = os.path.join(dot_git, "HEAD")
            if os.path.isfile(head):
                with open(head, encoding="utf-8") as fh:
                    text = fh.read(256).strip()
                if text.startswith("ref:"):
                    ref = text.partition(":")[2].strip()
                    return ref.removeprefix("refs/heads/")
                return text[:12] or None
        except OSError:
            return None
        parent = os.path.dirname(path)
        if parent == path:
            return None
        path = parent


def system_info(world_size: int | None = None, rank: int | None = None) -> dict[str, Any]:
    """A flat dict of facts about this run, safe to log as config or params."""
    from ezpz._version import __version__

    info: dict[str, Any] = {
        "hostname": socket.gethostname(),
        "python_version": platform.python_version(),
        "platform": platform.platform(terse=True),
        "ezpz_version": __version__,
    }
    torch_version = package_version("torch")
    if torch_version is not None:
        info["torch_version"] = torch_version
    info["device"] = device_kind()
    branch = git_branch()
    if branch:
        info["git_branch"] = branch
    if world_size is not None:
        info["world_size"] = int(world_size)
    if rank is not None:
        info["rank"] = int(rank)
    script = sys.argv[0] if sys.argv else ""
    if script and script not in ("-c", "-m", "-"):
        info["script"] = os.path.basename(script)
    info.update(job_info())
    return info
