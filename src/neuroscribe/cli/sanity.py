"""`neuroscribe sanity`: does each scorer of a finished run fall when the explanation gets worse?"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "sanity",
        help="check that every scorer's score falls for a wrong, an incomplete or a padded explanation",
        description=(
            "Score each explained unit of RUN again beside three worse explanations: another unit's (wrong "
            "label), half of a compound one (missing label), one with an unrelated concept appended (extra "
            "label), with the run's scorers, models and response cache. Prints, per scorer and model, how often "
            "the score fell, with 95%% Wilson intervals and a verdict, and writes every worse explanation and "
            "its score as JSON (default RUN/sanity.json)."
        ),
    )
    parser.add_argument("run", metavar="RUN", help="a finished run directory")
    parser.add_argument("--units", type=int, default=None, metavar="N",
                        help="check at most N units per method (the first in layer/index order); default all")
    parser.add_argument("--scorer", dest="scorers", action="append", default=[], metavar="LABEL",
                        help="check only this scorer (its label in the run's method ids); repeatable")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="change the run's config for the checks, as for `neuroscribe run --set`, e.g. "
                             "--set backends.default.model=... to check the scorers on another model; repeatable")
    parser.add_argument("--out", default=None, metavar="FILE", help="where to write the JSON (default RUN/sanity.json)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=handle)


def handle(args: argparse.Namespace) -> int:
    from neuroscribe.experiments.sanity import SANITY_FILE, run_sanity

    report = run_sanity(args.run, max_units=args.units, scorers=args.scorers or None, overrides=args.overrides,
                        progress=not args.no_progress)
    out = Path(args.out) if args.out else Path(args.run) / SANITY_FILE
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report.to_json_obj(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(report.to_text())
    print(f"wrote {out}")
    return 0
