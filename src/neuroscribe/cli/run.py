"""`neuroscribe run`: run (or resume) an experiment config into a run directory."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "run",
        help="run or resume an experiment (explain, simulate and score units as a TOML config says)",
        description=(
            "Run the experiment CONFIG into RUN_DIR. Results are committed unit by unit, so running the same "
            "command again after a crash or a kill resumes where it stopped; failed units are retried. "
            "Shards (--shard i/n) split the units between processes that may share RUN_DIR."
        ),
    )
    parser.add_argument("config", metavar="CONFIG", help="experiment config (.toml), e.g. experiments/quickstart.toml")
    parser.add_argument("--out", required=True, metavar="RUN_DIR", help="run directory (created, or resumed)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value (dotted key, TOML value), e.g. --set units.refs='[\"1/1\"]' "
                             "or --set explainers.0.options.max_tokens=60; repeatable")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the plan (units, methods, model calls, estimated cost) and stop")
    parser.add_argument("--shard", default="0/1", metavar="I/N", help="do only shard I of N (0-based), e.g. 0/4")
    parser.add_argument("--skip-failed", action="store_true", help="do not retry units that failed before")
    parser.add_argument("--repeats", type=int, default=1, metavar="N",
                        help="run the experiment N times with other sampling seeds (same units and records; "
                             "repeat r > 0 goes to RUN_DIR/repeats/r), so the report shows run-to-run spread")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                        help="compute units on Ray workers: 'auto' joins the local node's cluster, host:port another, "
                             "nothing starts one on this machine (needs neuroscribe[ray]; see docs/distributed.md)")
    parser.add_argument("--workers", type=int, default=None, metavar="N",
                        help="with --ray: worker processes (default: as many as the cluster's CPUs or GPUs hold); "
                             "each has up to run.max_concurrent_units units in flight")
    parser.add_argument("--cpus-per-worker", type=float, default=1, help="with --ray: CPUs per worker (default 1)")
    parser.add_argument("--gpus-per-worker", type=float, default=0, help="with --ray: GPUs per worker (default 0)")
    parser.set_defaults(func=handle)


def handle(args: argparse.Namespace) -> int:
    from neuroscribe.experiments.config import load_config
    from neuroscribe.experiments.plan import Shard, make_plan
    from neuroscribe.experiments.runner import run_experiment

    config = load_config(args.config, args.overrides)
    shard = Shard.parse(args.shard)
    if args.dry_run:
        print(make_plan(config, args.out, shard, skip_failed=args.skip_failed).to_text())
        if args.repeats > 1:
            print(f"x {args.repeats} repeats (greedy requests are shared through the response cache)")
        return 0
    executor = None
    if args.ray is not None:
        from neuroscribe.experiments.distributed import RayWorkers

        executor = RayWorkers(args.ray or None, workers=args.workers, cpus_per_worker=args.cpus_per_worker,
                              gpus_per_worker=args.gpus_per_worker)
    summary = run_experiment(args.config, args.out, args.overrides, shard=shard, skip_failed=args.skip_failed,
                             progress=False if args.no_progress else None, repeats=args.repeats, executor=executor)
    print(summary.to_text())
    if summary.failed:
        print(f"{summary.failed} (unit, method) pairs failed; `neuroscribe report {args.out}` lists the reasons, "
              "and running the same command again retries them")
    if summary.nothing_succeeded:
        print(f"nothing finished: every one of the {summary.attempted} attempted (unit, method) pairs failed",
              file=sys.stderr)
        return 1
    return 0
