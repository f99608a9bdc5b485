"""The `neuroscribe` command. Each module in this package adds one command with `register()`.

Commands are discovered, so adding one is one new module here and no edit elsewhere.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys
from collections.abc import Sequence

from neuroscribe.errors import NeuroscribeError, describe_os_error


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="neuroscribe",
        description="Explain, simulate and score the units of language models.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if module_info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{module_info.name}")
        module.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Each command's `register` sets `func(args) -> int` as the handler."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args))
    except NeuroscribeError as error:
        print(f"neuroscribe {args.command}: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # one path for every filesystem failure: which file, and why
        print(f"neuroscribe {args.command}: error: {describe_os_error(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"neuroscribe {args.command}: interrupted", file=sys.stderr)
        return 130
