"""`photoscore config`: the effective configuration, and with `--sources` where each value came from."""
from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "config", help="print the effective configuration as YAML",
        description=__doc__ + " Sources apply in this order: conf/photoscore.yaml (default), "
        "PHOTOSCORE_* environment variables, the ecosystem's own (MLFLOW_TRACKING_URI), --set flags.")
    p.add_argument("--sources", action="store_true",
                   help="end each value with where it came from: default, env NAME or --set KEY")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace, settings) -> int:
    from jobs.config import load_settings_with_sources, render_yaml

    origins = load_settings_with_sources(args.overrides)[1] if args.sources else None
    print(render_yaml(settings, origins), end="")
    return 0
