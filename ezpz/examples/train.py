"""A small, real training job tracked by ezpz.

An MLP student learns to classify points labelled by a fixed random
"teacher" network (synthetic data, no downloads). With several ranks it
trains under DistributedDataParallel (gloo on CPU, nccl on CUDA, xccl on
XPU); every rank draws its own batches. Each step logs loss, accuracy,
timings, throughput, TFLOP/s, MFU (on accelerators with a known peak) and
device memory into the ``train/`` group; every ``--eval-every`` steps the
held-out loss and accuracy go into ``eval/``. At the end ``finalize()``
writes datasets, plots and a report into ``--outdir``.

    mpiexec -n 2 python -m ezpz.examples.train
    python -m ezpz.examples.train --steps 50 --backends csv

With ``--resume`` the job is restartable (jobscripts/slurm.sh, pbs.sh;
docs/restarts.md): rank 0 writes ``{outdir}/checkpoint.pt`` (model,
optimizer, step) every ``--ckpt-every`` steps, and a restarted job loads it,
continues from the step after it, and continues the same ezpz run
(``History(resume="auto")``): steps logged after the checkpoint by the
interrupted job are superseded by the new ones.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

logger = logging.getLogger("ezpz.examples.train")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m ezpz.examples.train",
        description=(
            "Train an MLP on a synthetic teacher-labelled classification task, tracked by "
            "ezpz.History. Launch with mpiexec/srun for DDP over several ranks."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        epilog=(
            "Tracking backends come from --backends or EZPZ_TRACKER_BACKENDS "
            "(wandb, mlflow, csv, none). Example: "
            "EZPZ_TRACKER_BACKENDS=csv mpiexec -n 2 python -m ezpz.examples.train"
        ),
    )
    model = parser.add_argument_group("model and data")
    model.add_argument("--features", type=int, default=32, help="input dimension")
    model.add_argument("--classes", type=int, default=10, help="number of classes")
    model.add_argument("--hidden", type=int, default=256, help="hidden width of the student")
    model.add_argument("--depth", type=int, default=3, help="hidden layers of the student")
    model.add_argument("--eval-size", type=int, default=2048, help="held-out samples (all ranks)")
    train = parser.add_argument_group("training")
    train.add_argument("--steps", type=int, default=400, help="optimizer steps")
    train.add_argument("--batch-size", type=int, default=128, help="samples per rank per step")
    train.add_argument("--lr", type=float, default=3e-3, help="peak learning rate (cosine decay)")
    train.add_argument("--weight-decay", type=float, default=0.01, help="AdamW weight decay")
    train.add_argument(
        "--dtype",
        choices=("fp32", "bf16"),
        default="fp32",
        help="compute dtype (bf16 uses autocast; MFU uses the matching peak)",
    )
    train.add_argument("--seed", type=int, default=1234, help="seed (offset by rank for data)")
    track = parser.add_argument_group("tracking")
    track.add_argument("--eval-every", type=int, default=50, help="steps between evaluations")
    track.add_argument("--log-every", type=int, default=20, help="steps between console lines")
    track.add_argument(
        "--outdir",
        default=None,
        help="output folder (default: ./outputs/train/<timestamp>)",
    )
    track.add_argument(
        "--backends",
        default=None,
        help="comma-separated tracker backends (default: EZPZ_TRACKER_BACKENDS)",
    )
    track.add_argument("--project", default=None, help="project name for wandb/mlflow")
    track.add_argument(
        "--resume",
        action="store_true",
        help="restartable: continue from {outdir}/checkpoint.pt and the same ezpz run "
        "(needs a fixed --outdir)",
    )
    track.add_argument(
        "--ckpt-every", type=int, default=50, help="steps between checkpoints (with --resume)"
    )
    track.add_argument(
        "--warmup",
        type=float,
        default=0.05,
        help="fraction (<1) or count of leading steps left out of plots and report",
    )
    args = parser.parse_args(argv)
    for name in (
        "steps",
        "batch_size",
        "features",
        "classes",
        "hidden",
        "eval_every",
        "ckpt_every",
    ):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.depth < 0:
        parser.error("--depth must be >= 0")
    return args


def build_model(args: argparse.Namespace) -> Any:
    import torch

    layers: list[torch.nn.Module] = []
    width = args.features
    for _ in range(args.depth):
        layers += [torch.nn.Linear(width, args.hidden), torch.nn.GELU()]
        width = args.hidden
    layers.append(torch.nn.Linear(width, args.classes))
    return torch.nn.Sequential(*layers)


class TeacherTask:
    """Points from N(0, 1) labelled by a fixed random two-layer network.

    The teacher and the held-out set come from ``seed`` alone, so every rank
    agrees on them; training batches come from a per-rank generator.
    """

    def __init__(self, args: argparse.Namespace, rank: int, device: Any) -> None:
        import torch

        self.device = device
        shared = torch.Generator().manual_seed(args.seed)
        # scaled so the teacher stays in tanh's smooth range: learnable, not trivial
        self.w1 = torch.randn(args.features, 4 * args.classes, generator=shared)
        self.w1 /= args.features**0.5
        self.w2 = torch.randn(4 * args.classes, args.classes, generator=shared)
        self.features = args.features
        self.batch_size = args.batch_size
        self.train_gen = torch.Generator().manual_seed(args.seed + 1 + rank)
        eval_x = torch.randn(args.eval_size, args.features, generator=shared)
        self.eval_x = eval_x.to(device)
        self.eval_y = self.label(eval_x).to(device)

    def label(self, x: Any) -> Any:
        return (x @ self.w1).tanh().matmul(self.w2).argmax(dim=1)

    def batch(self) -> tuple[Any, Any]:
        import torch

        x = torch.randn(self.batch_size, self.features, generator=self.train_gen)
        return x.to(self.device, non_blocking=True), self.label(x).to(self.device)

    def eval_shard(self, rank: int, world_size: int) -> tuple[Any, Any]:
        return self.eval_x[rank::world_size], self.eval_y[rank::world_size]


def _synchronize(device: Any) -> None:
    """Wait for queued device work so host timers measure it."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "xpu":
        torch.xpu.synchronize(device)


def _default_outdir() -> Path:
    import torch.distributed as dist

    stamp = [time.strftime("%Y-%m-%d-%H%M%S")]
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.broadcast_object_list(stamp, src=0)  # every rank writes to one folder
    return Path("outputs") / "train" / stamp[0]


def _lr_at(step: int, args: argparse.Namespace) -> float:
    import math

    warm = max(1, args.steps // 20)
    if step < warm:
        return args.lr * (step + 1) / warm
    progress = (step - warm) / max(1, args.steps - warm)
    return args.lr * 0.5 * (1.0 + math.cos(math.pi * progress))


def evaluate(model: Any, task: TeacherTask, rank: int, world_size: int) -> dict[str, Any]:
    import torch

    x, y = task.eval_shard(rank, world_size)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        logits = model(x)
        loss = torch.nn.functional.cross_entropy(logits, y)
        accuracy = (logits.argmax(dim=1) == y).float().mean()
    model.train(was_training)
    return {"eval/loss": loss, "eval/accuracy": accuracy}


CHECKPOINT = "checkpoint.pt"


def save_checkpoint(path: Path, model: Any, optimizer: Any, step: int) -> None:
    """Rank 0: model, optimizer and the step, written to a temporary name and renamed."""
    import torch

    module = getattr(model, "module", model)  # DDP wraps the model
    state = {"model": module.state_dict(), "optimizer": optimizer.state_dict(), "step": step}
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def load_checkpoint(path: Path, device: Any) -> dict[str, Any] | None:
    """The checkpoint at ``path`` (every rank reads it), or None."""
    if not path.is_file():
        return None
    import torch

    return torch.load(path, map_location=device, weights_only=True)


def main(argv: Sequence[str] | None = None) -> Path:
    """Run the job; return the output folder."""
    args = parse_args(argv)
    import torch
    import torch.distributed as dist

    import ezpz
    from ezpz.flops import compute_mfu, peak_flops, try_estimate
    from ezpz.history import StopWatch

    rank = ezpz.setup_torch(seed=args.seed)
    world_size = dist.get_world_size()
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING,
        format="%(asctime)s %(levelname)s [%(name)s] %(message)s",
    )
    device = ezpz.get_torch_device()
    outdir = Path(args.outdir) if args.outdir else _default_outdir()

    task = TeacherTask(args, rank, device)
    model = build_model(args).to(device)
    ckpt = load_checkpoint(outdir / CHECKPOINT, device) if args.resume else None
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
    step_flops = try_estimate(model, (args.batch_size, args.features))
    peak = peak_flops(device, args.dtype)
    if world_size > 1:
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index] if device.type in ("cuda", "xpu") else None
        model = DistributedDataParallel(model, device_ids=ids)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    start = 0
    if ckpt is not None:
        optimizer.load_state_dict(ckpt["optimizer"])
        start = int(ckpt["step"]) + 1
    autocast: Callable[[], contextlib.AbstractContextManager[Any]]
    if args.dtype == "bf16":
        autocast = functools.partial(torch.autocast, device.type, dtype=torch.bfloat16)
    else:
        autocast = contextlib.nullcontext

    config = {**vars(args), "world_size": world_size, "device": str(device)}
    config["outdir"] = str(outdir)
    history = ezpz.History(
        project_name=args.project,
        backends=args.backends,
        config=config,
        outdir=outdir,
        report_dir=outdir,
        # --resume: the same run as the interrupted job (a new one if there is none)
        resume="auto" if args.resume else None,
    )
    if rank == 0:
        logger.info(
            "training on %d rank(s), device %s, %s FLOPs per rank per step; output in %s",
            world_size,
            device,
            f"{step_flops:.3e}" if step_flops else "unknown",
            outdir,
        )
        if ckpt is not None:
            logger.info("resumed from %s at step %d", outdir / CHECKPOINT, start)

    model.train()
    for step in range(start, args.steps):
        lr = _lr_at(step, args)
        for group in optimizer.param_groups:
            group["lr"] = lr
        x, y = task.batch()
        _synchronize(device)
        t0 = time.perf_counter()
        with autocast():
            logits = model(x)
            loss = torch.nn.functional.cross_entropy(logits.float(), y)
        _synchronize(device)
        t1 = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        _synchronize(device)
        dt = time.perf_counter() - t0

        metrics: dict[str, Any] = {
            "train/iter": step,
            # tensors are fine: History copies them to the host in one batch
            "train/loss": loss,
            "train/accuracy": (logits.argmax(dim=1) == y).float().mean(),
            "train/dtf": t1 - t0,
            "train/dtb": dt - (t1 - t0),
            "train/dt": dt,
            "train/samples_per_sec": args.batch_size / dt,
            "train/lr": lr,
        }
        if step_flops:
            metrics["train/tflops"] = step_flops / dt / 1e12
            if peak:
                metrics["train/mfu"] = compute_mfu(step_flops, dt, peak=peak)
        metrics |= ezpz.get_memory_metrics(device, prefix="train/")
        summary = history.update(metrics, step=step)
        if rank == 0 and (step % args.log_every == 0 or step == args.steps - 1):
            logger.info(summary)

        if (step + 1) % args.eval_every == 0 or step == args.steps - 1:
            with StopWatch("eval", wbtag="timing/eval"):
                summary = history.update(evaluate(model, task, rank, world_size), step=step)
            if rank == 0:
                logger.info(summary)
        if args.resume and rank == 0 and (step + 1) % args.ckpt_every == 0:
            save_checkpoint(outdir / CHECKPOINT, model, optimizer, step)

    history.finalize(outdir=outdir, warmup=args.warmup)
    if rank == 0:
        logger.info("outputs in %s", outdir.resolve())
    ezpz.cleanup()
    return outdir


if __name__ == "__main__":
    main()
