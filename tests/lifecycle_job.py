"""A training-like job for the lifecycle tests: ``mpiexec -n 2 python lifecycle_job.py ...``.

Every rank logs deterministic values (a function of step and rank) so that
interrupted and resumed runs can be compared with one uninterrupted run.
Rank 0 appends each step to ``returned.txt`` after ``update()`` returned,
writes its pid to ``pid.0``, and "checkpoints" (``ckpt.txt``) every
``--ckpt-every`` steps; a resumed job restarts after the last checkpoint.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

from mpi4py import MPI


def values(step: int, rank: int) -> dict[str, float]:
    return {
        "train/loss": 1.0 / (1.0 + step) + 0.01 * rank,
        "train/acc": math.sin(step * 0.1) * (1 + rank),
        "train/lr": 1e-3,
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dir", required=True)
    parser.add_argument("--steps", type=int, default=10**6)
    parser.add_argument("--backends", default="csv")
    parser.add_argument("--resume", default=None)
    parser.add_argument("--ckpt-every", type=int, default=0)
    parser.add_argument("--sleep", type=float, default=0.0)
    parser.add_argument("--finalize", action="store_true")
    parser.add_argument("--eval-every", type=int, default=0)
    parser.add_argument("--user-handler", action="store_true")
    args = parser.parse_args()

    from ezpz.history import History
    from ezpz.tracker import TrackerBackend, register_backend

    class Slow(TrackerBackend):
        name = "slow"

        def __init__(self, **_kw):
            self.calls = 0

        def log(self, metrics, step=None, commit=True):
            time.sleep(0.04)
            self.calls += 1

        def log_config(self, config):
            pass

        def finish(self):
            pass

    register_backend("slow", Slow)
    rank = MPI.COMM_WORLD.Get_rank()
    work = Path(args.dir)
    if args.user_handler and rank == 0:
        import signal

        def user_handler(signum, frame):
            (work / "user_handler_ran").write_text(str(signum))
            os._exit(7)

        signal.signal(signal.SIGTERM, user_handler)
    hist = History(
        report_dir=work / "report",
        backends=args.backends,
        resume=args.resume,
        config={"lr": 1e-3, "seed": 1},
        run_name="lifecycle-test",
    )
    start = 0
    ckpt = work / "ckpt.txt"
    if args.resume and ckpt.exists():
        start = int(ckpt.read_text()) + 1
    if rank == 0:
        (work / "pid.0").write_text(str(os.getpid()))
    returned = os.open(work / "returned.txt", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    for step in range(start, args.steps):
        hist.update(values(step, rank), step=step)
        if args.eval_every and step % args.eval_every == 0:
            hist.update({"eval/loss": 2.0 / (1.0 + step) + rank}, step=step)
        if rank == 0:
            os.write(returned, b"%d\n" % step)
            if args.ckpt_every and step % args.ckpt_every == 0:
                tmp = work / "ckpt.tmp"
                tmp.write_text(str(step))
                os.replace(tmp, ckpt)
        if args.sleep:
            time.sleep(args.sleep)
    if args.finalize:
        hist.finalize(plot=False)
    hist.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
