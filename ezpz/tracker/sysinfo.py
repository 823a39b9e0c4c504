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
    if world_size is not None:
        info["world_size"] = int(world_size)
    if rank is not None:
        info["rank"] = int(rank)
    script = sys.argv[0] if sys.argv else ""
    if script and script not in ("-c", "-m", "-"):
        info["script"] = os.path.basename(script)
    info.update(job_info())
    return info
