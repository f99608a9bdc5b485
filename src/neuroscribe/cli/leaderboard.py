"""`neuroscribe leaderboard`: rank the methods of one or more runs with paired statistics."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "leaderboard",
        help="rank explanation methods (mean score on common units, coverage, paired tests against the best)",
        description=(
            "Rank every explanation source x scorer combination and control found in the RUN directories by its "
            "mean score on the units every ranked method scored, compare each with the best one unit by unit, and "
            "print Markdown; --html also writes HTML."
        ),
    )
    parser.add_argument("runs", nargs="+", metavar="RUN", help="run directories (shards of one config merge)")
    parser.add_argument("--html", default=None, metavar="FILE", help="also write the leaderboard as HTML")
    parser.add_argument("--markdown", default=None, metavar="FILE", help="also write the Markdown to a file")
    parser.add_argument("--score", default=None, metavar="NAME[.VARIANT]",
                        help="the score to rank by, e.g. ev_correlation, ev_correlation.random_only, rsquared "
                             "(default: the first method's headline score, top_and_random)")
    parser.add_argument("--min-coverage", type=float, default=0.9, metavar="FRACTION",
                        help="methods that scored fewer than this share of their attempted units are flagged and "
                             "ranked after the others (default 0.9)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap and permutation resampling")
    parser.set_defaults(func=handle)


def handle(args: argparse.Namespace) -> int:
    from neuroscribe.experiments.leaderboard import build_leaderboard

    board = build_leaderboard(args.runs, seed=args.seed, score=args.score, min_coverage=args.min_coverage)
    markdown = board.to_markdown()
    print(markdown)
    for path, text in ((args.markdown, markdown), (args.html, board.to_html() if args.html else "")):
        if path:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(text, encoding="utf-8")
            print(f"wrote {path}")
    return 0
