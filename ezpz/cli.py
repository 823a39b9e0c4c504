"""``ezpz-history``: command-line tools for ezpz runs.

``ezpz-history report RUN.jsonl --outdir DIR`` rebuilds everything
``finalize()`` writes (datasets, plots, report, metrics.jsonl) from a run's
JSONL log: for runs killed before finalize, and for jobs that skip plotting
on compute nodes (``finalize(plot=False)``) and plot later on a login node.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

logger = logging.getLogger("ezpz.cli")

_REPORT_EPILOG = """\
examples:
  ezpz-history report outputs/history/2026-01-01-120000-ab12cd.jsonl --outdir outputs/rebuilt
  ezpz-history report run.jsonl --outdir out --warmup 0.05 --config outputs/config.json
  ezpz-history report run.jsonl --outdir out --no-plots      # datasets + report only

The JSONL is read line by line; a torn last line (a killed run) is skipped
with a warning. Only rank 0's view exists in the JSONL (raw values of rank 0
plus the cross-rank statistics), so no ranks.h5 is written.
"""


def _load_config(path: str | None) -> dict:
    if path is None:
        return {}
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise SystemExit(f"ezpz-history: cannot read config {path}: {exc}") from None
    if not isinstance(data, dict):
        raise SystemExit(f"ezpz-history: config {path} must hold a JSON object")
    return data


def _warmup(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError("must be >= 0 (fraction < 1 or count >= 1)")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be >= 1")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ezpz-history",
        description="Tools for ezpz experiment-tracking runs.",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="only print warnings and errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    report = sub.add_parser(
        "report",
        help="rebuild datasets, plots and report.md from a run's JSONL log",
        description=(
            "Rebuild the whole finalize() output (one HDF5 dataset per group, "
            "matplotlib and terminal plots, report.md, metrics.jsonl) from the "
            "JSONL log a History wrote (by default <report_dir>/<run_id>.jsonl)."
        ),
        epilog=_REPORT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    report.add_argument("jsonl", metavar="RUN.jsonl", help="the run's JSONL log")
    report.add_argument(
        "--outdir",
        "-o",
        required=True,
        metavar="DIR",
        help="where to write the output (created; files there are replaced)",
    )
    report.add_argument(
        "--warmup",
        type=_warmup,
        default=0.0,
        help="leading samples dropped from plots and statistics: "
        "a fraction if < 1, a count if >= 1 (default 0)",
    )
    report.add_argument(
        "--num-chains",
        type=_positive_int,
        default=128,
        help="most chains drawn in ridge plots of vector metrics (default 128)",
    )
    report.add_argument(
        "--run-name", default=None, help="run name for the report (default: file stem)"
    )
    report.add_argument(
        "--config",
        default=None,
        metavar="JSON",
        help="a JSON file with the run config, for the report",
    )
    report.add_argument(
        "--no-plots", action="store_true", help="skip matplotlib and terminal plots"
    )
    return parser


def _report(args: argparse.Namespace) -> int:
    from ezpz.history import History

    path = Path(args.jsonl)
    if not path.is_file():
        print(f"ezpz-history: no such file: {path}", file=sys.stderr)
        return 2
    config = _load_config(args.config)
    history = History.from_jsonl(path, config=config)
    if not history.store.groups:
        print(f"ezpz-history: {path} holds no metrics", file=sys.stderr)
        return 1
    outdir = Path(args.outdir)
    history.finalize(
        outdir=outdir,
        run_name=args.run_name,
        warmup=args.warmup,
        num_chains=args.num_chains,
        plot=not args.no_plots,
    )
    history.close()
    if not args.quiet:
        print(f"ezpz-history: wrote {outdir / 'report.md'}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if args.command == "report":
        return _report(args)
    parser.error(f"unknown command {args.command!r}")
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
