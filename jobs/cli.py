"""The `photoscore` command line: discovers subcommands in `jobs.commands` and runs one."""
from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys

from jobs import commands
from jobs.config import ConfigError, load_settings
from udfs.errors import PhotoscoreError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="photoscore",
        description="Score photos with ML models: local, Spark batch, PyFlink stream.",
    )
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
        help="override a config key (applied after conf/photoscore.yaml and the environment); "
             "`photoscore config --sources` shows the effective values and where each came from",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        importlib.import_module(f"jobs.commands.{info.name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, load the layered config and run the chosen subcommand."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # kafka-python logs every connection at INFO; keep its warnings, drop the chatter.
    logging.getLogger("kafka").setLevel(logging.DEBUG if args.verbose else logging.WARNING)
    try:
        settings = load_settings(args.overrides)
        return int(args.handler(args, settings) or 0)
    except ConfigError as exc:
        print(f"photoscore: config error: {exc}", file=sys.stderr)
        return 2
    except PhotoscoreError as exc:
        print(f"photoscore {args.command}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
