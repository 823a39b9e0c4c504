"""``ezpz-history``: command-line tools for ezpz runs, made for a login node.

- ``report RUN.jsonl --outdir DIR`` rebuilds everything ``finalize()`` writes
  (datasets, plots, report, metrics.jsonl) from a run's JSONL log: for runs
  killed before finalize, and for jobs that skip plotting on compute nodes.
- ``watch RUN`` is a live terminal view of a running job.
- ``compare RUN_A RUN_B ...`` tabulates and overlays the metrics of runs.
- ``sync RUN --backends mlflow,wandb,csv`` replays a JSONL into backends,
  idempotently and resumably.

Global options (``-q``, ``-v``, ``--report-dir``) go before or after the
command. Exit status: 0 success, 1 failure (bad input, unreachable server),
2 usage error (unknown option, a RUN that names nothing). See docs/cli.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

logger = logging.getLogger("ezpz.cli")

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2

_RUN_HELP = (
    "a run: its JSONL, a run id (looked up in --report-dir), a finalize outdir, "
    "or a report_dir (its newest run)"
)

_TOP_EPILOG = """\
examples:
  ezpz-history watch outputs/history                  # the newest run, live
  ezpz-history compare RUN_A.jsonl RUN_B.jsonl --outdir cmp
  ezpz-history sync 2026-01-01-120000-ab12cd --backends mlflow
  ezpz-history report -q run.jsonl --outdir out

Global options (-q, -v, --report-dir) may come before or after the command.
Exit status: 0 ok, 1 failure, 2 usage error.
"""

_REPORT_EPILOG = """\
examples:
  ezpz-history report outputs/history/2026-01-01-120000-ab12cd.jsonl --outdir outputs/rebuilt
  ezpz-history report run.jsonl --outdir out --warmup 0.05 --config outputs/config.json
  ezpz-history report run.jsonl --outdir out --no-plots      # datasets + report only

The JSONL is read line by line; a torn last line (a killed run) is skipped
with a warning. Only rank 0's view exists in the JSONL (raw values of rank 0
plus the cross-rank statistics), so no ranks.h5 is written.
"""

_WATCH_EPILOG = """\
examples:
  ezpz-history watch outputs/history                   # newest run in a report_dir
  ezpz-history watch RUN.jsonl --metrics loss,lr       # plot these (group-less names match)
  ezpz-history watch RUN.jsonl --group train --last 500
  ezpz-history watch RUN.jsonl --once                  # one frame, for scripts and `watch -n`

Redraws every --interval seconds reading only what was appended since the
last frame (a 10 GB JSONL costs a few MiB per frame); a torn last line is
left for the next frame; a replaced or rotated file is picked up. Ctrl-C exits.
"""

_COMPARE_EPILOG = """\
examples:
  ezpz-history compare RUN_A.jsonl RUN_B.jsonl
  ezpz-history compare run-a run-b run-c --outdir cmp      # cmp/compare.md + cmp/plots/*.png
  ezpz-history compare A.jsonl B.jsonl --metrics train/loss --no-tplot

Per metric and run: last value, min, best (max for accuracy-like names, else
min), mean over the last 10% of points, and the last value minus the first
run's. Plots overlay the metrics at least two runs share, aligned by step.
"""

_SYNC_EPILOG = """\
examples:
  MLFLOW_TRACKING_URI=http://127.0.0.1:5000 ezpz-history sync RUN.jsonl --backends mlflow
  ezpz-history sync outputs/history --backends mlflow,wandb --dry-run
  WANDB_MODE=offline ezpz-history sync RUN.jsonl --backends wandb
  ezpz-history sync RUN.jsonl --backends csv --csv-dir out

Idempotent and resumable, keyed by the ezpz run id: the MLflow run carries the
tag ezpz.run_id (found in any experiment, else created), the W&B run id is the
ezpz run id. A second sync sends nothing new; an interrupted sync continues
where it stopped; a run still being written can be synced again later.
Credentials as for live runs: MLFLOW_TRACKING_TOKEN, AMSC_API_KEY (also from
~/.amsc.env and ./.env), WANDB_API_KEY; never printed.
"""


class _Parser(argparse.ArgumentParser):
    """argparse with ``ezpz-history: error:`` messages and exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


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


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return value


def _names(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise argparse.ArgumentTypeError("give at least one name")
    return names


def _backends(text: str) -> list[str]:
    from ezpz.runs.sync import parse_backends

    try:
        return parse_backends(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _global_options(suppress: bool) -> argparse.ArgumentParser:
    """The options every command takes; ``suppress`` keeps a subparser from resetting them."""
    default = argparse.SUPPRESS if suppress else None
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("global options")
    group.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=argparse.SUPPRESS if suppress else False,
        help="only print warnings and errors",
    )
    group.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=argparse.SUPPRESS if suppress else False,
        help="also print debug messages",
    )
    group.add_argument(
        "--report-dir",
        metavar="DIR",
        default=default,
        help="where run ids are looked up (default: ./outputs/history, History's default)",
    )
    return parent


def _sub(
    sub: argparse._SubParsersAction, name: str, epilog: str, **kw: object
) -> argparse.ArgumentParser:
    return sub.add_parser(
        name,
        parents=[_global_options(suppress=True)],
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        **kw,  # type: ignore[arg-type]
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="ezpz-history",
        description="Tools for ezpz experiment-tracking runs, for a login node.",
        parents=[_global_options(suppress=False)],
        epilog=_TOP_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    report = _sub(
        sub,
        "report",
        _REPORT_EPILOG,
        help="rebuild datasets, plots and report.md from a run's JSONL log",
        description=(
            "Rebuild the whole finalize() output (one HDF5 dataset per group, "
            "matplotlib and terminal plots, report.md, metrics.jsonl) from the "
            "JSONL log a History wrote (by default <report_dir>/<run_id>.jsonl)."
        ),
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

    from ezpz.runs.watch import DEFAULT_INTERVAL, DEFAULT_LAST

    watch = _sub(
        sub,
        "watch",
        _WATCH_EPILOG,
        help="live terminal view of a running job",
        description=(
            "A live view of a run: header (run id, world size, last step, steps/s, "
            "time since the last line, interrupted/finished), the latest value "
            "(± std across ranks) of every metric, and line plots of selected metrics."
        ),
    )
    watch.add_argument("run", metavar="RUN", help=_RUN_HELP)
    watch.add_argument(
        "--metrics", type=_names, default=[], metavar="A,B", help="metrics to plot (default: 4)"
    )
    watch.add_argument("--group", default=None, help="plot every metric of this group")
    watch.add_argument(
        "--interval",
        type=_positive_float,
        default=DEFAULT_INTERVAL,
        metavar="S",
        help=f"seconds between frames (default {DEFAULT_INTERVAL:g})",
    )
    watch.add_argument("--once", action="store_true", help="print one frame and exit")
    watch.add_argument(
        "--last",
        type=_positive_int,
        default=DEFAULT_LAST,
        metavar="N",
        help=f"rows kept for plots and rates (default {DEFAULT_LAST})",
    )
    watch.add_argument(
        "--width", type=_positive_int, default=None, help="frame width (default: terminal)"
    )
    watch.add_argument("--no-plots", action="store_true", help="header and values only")

    compare = _sub(
        sub,
        "compare",
        _COMPARE_EPILOG,
        help="table and overlaid plots of two or more runs",
        description="Compare the metrics of runs: one table, overlaid plots aligned by step.",
    )
    compare.add_argument("runs", nargs="+", metavar="RUN", help=_RUN_HELP)
    compare.add_argument(
        "--outdir", "-o", default=None, metavar="DIR", help="write compare.md and PNGs here"
    )
    compare.add_argument(
        "--metrics", type=_names, default=None, metavar="A,B", help="only these metrics"
    )
    compare.add_argument(
        "--stats", action="store_true", help="also tabulate /mean /min /max /std statistics"
    )
    compare.add_argument(
        "--higher-is-better",
        type=_names,
        default=[],
        metavar="A,B",
        help="metrics whose best is the maximum (besides accuracy-like names)",
    )
    compare.add_argument("--no-tplot", action="store_true", help="no terminal plots")
    compare.add_argument(
        "--width", type=_positive_int, default=None, help="terminal plot width (default: terminal)"
    )

    sync = _sub(
        sub,
        "sync",
        _SYNC_EPILOG,
        help="replay a run's JSONL into mlflow, wandb or csv (idempotent, resumable)",
        description=(
            "Replay a run's JSONL into tracking backends after the fact: metrics "
            "(with the live /local renaming), config (secrets redacted), and "
            "finalize()'s artifacts when its outdir exists."
        ),
    )
    sync.add_argument("run", metavar="RUN", help=_RUN_HELP)
    sync.add_argument(
        "--backends",
        "-b",
        type=_backends,
        required=True,
        metavar="NAMES",
        help="comma-separated: mlflow, wandb, csv",
    )
    sync.add_argument("--dry-run", "-n", action="store_true", help="say what would be sent")
    sync.add_argument(
        "--tracking-uri", default=None, help="MLflow server (default: $MLFLOW_TRACKING_URI)"
    )
    sync.add_argument(
        "--experiment",
        default=None,
        help="MLflow experiment for a new run (default: $MLFLOW_EXPERIMENT_NAME, "
        "W&B project variables, else 'ezpz-sync')",
    )
    sync.add_argument("--project", default=None, help="W&B project (default: as live runs)")
    sync.add_argument(
        "--csv-dir", default=None, metavar="DIR", help="csv target (default: the run's outdir)"
    )
    sync.add_argument(
        "--no-artifacts", action="store_true", help="metrics and params only, no files"
    )
    sync.add_argument(
        "--workers",
        type=_positive_int,
        default=None,
        metavar="N",
        help="MLflow requests in flight (default 1: strictly in order); more can help "
        "over a slow link to a server with a PostgreSQL/MySQL store",
    )
    return parser


def _report(args: argparse.Namespace) -> int:
    from ezpz.history import History

    path = Path(args.jsonl)
    if not path.is_file():
        print(f"ezpz-history: no such file: {path}", file=sys.stderr)
        return EXIT_USAGE
    config = _load_config(args.config)
    history = History.from_jsonl(path, config=config)
    if not history.store.groups:
        print(f"ezpz-history: {path} holds no metrics", file=sys.stderr)
        return EXIT_FAILURE
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
    return EXIT_OK


def _resolve(spec: str, args: argparse.Namespace):  # -> RunInfo
    from ezpz.runs.locate import resolve_run

    return resolve_run(spec, args.report_dir)


def _watch(args: argparse.Namespace) -> int:
    from ezpz.runs.records import NotAnEzpzLogError, read_head
    from ezpz.runs.watch import WatchOptions, watch

    info = _resolve(args.run, args)
    head = read_head(info.jsonl)
    if head and not any(line.is_row or line.is_event for line in head):
        raise NotAnEzpzLogError(f"{info.jsonl} is not an ezpz JSONL log (no _step/_event lines)")
    if args.once and info.jsonl.stat().st_size == 0:
        raise NotAnEzpzLogError(f"{info.jsonl} is empty: no metrics were logged yet")
    opts = WatchOptions(
        metrics=args.metrics,
        group=args.group,
        last=args.last,
        width=args.width,
        plots=not args.no_plots,
    )
    return watch(info, opts, interval=args.interval, once=args.once)


def _compare(args: argparse.Namespace) -> int:
    import shutil

    from ezpz.runs import compare as cmp

    infos = [_resolve(spec, args) for spec in args.runs]
    runs = [cmp.load_series(info) for info in infos]
    keys = cmp.metric_keys(runs, stats=args.stats)
    if args.metrics:
        missing = [m for m in args.metrics if m not in keys]
        if missing:
            print(f"ezpz-history: no run has {', '.join(missing)}", file=sys.stderr)
            return EXIT_FAILURE
        keys = list(args.metrics)
    table = cmp.compare_table(runs, keys, args.higher_is_better)
    rows = cmp.table_rows(runs, table)
    sys.stdout.write(cmp.format_text_table(rows))
    shared = cmp.shared_keys(runs, keys)
    if not args.no_tplot and shared:
        width = args.width or max(60, shutil.get_terminal_size((100, 40)).columns)
        sys.stdout.write("\n" + cmp.terminal_plots(runs, shared, width))
    if args.outdir:
        outdir = Path(args.outdir)
        pngs = cmp.write_pngs(runs, shared, outdir)
        target = cmp.write_markdown(runs, rows, pngs, outdir)
        if not args.quiet:
            print(f"ezpz-history: wrote {target} and {len(pngs)} plots")
    return EXIT_OK


def _sync(args: argparse.Namespace) -> int:
    from ezpz.runs.sync import sync

    info = _resolve(args.run, args)
    out = None if args.quiet and not args.dry_run else sys.stdout
    if not args.quiet:
        print(f"ezpz-history: syncing run {info.run_id} ({info.jsonl})")
    sync(
        info,
        args.backends,
        dry_run=args.dry_run,
        tracking_uri=args.tracking_uri,
        experiment=args.experiment,
        project=args.project,
        csv_dir=args.csv_dir,
        artifacts=not args.no_artifacts,
        out=out,
        **({"workers": args.workers} if args.workers else {}),
    )
    return EXIT_OK


_COMMANDS = {"report": _report, "watch": _watch, "compare": _compare, "sync": _sync}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    for name, default in (("quiet", False), ("verbose", False), ("report_dir", None)):
        if not hasattr(args, name):
            setattr(args, name, default)
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if args.quiet:
        logging.getLogger().setLevel(logging.WARNING)
    from ezpz.runs.locate import RunNotFoundError
    from ezpz.runs.records import NotAnEzpzLogError
    from ezpz.runs.sync import SyncError

    try:
        return _COMMANDS[args.command](args)
    except RunNotFoundError as exc:
        print(f"ezpz-history: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (NotAnEzpzLogError, SyncError) as exc:
        print(f"ezpz-history: error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except OSError as exc:
        print(f"ezpz-history: error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print("ezpz-history: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
