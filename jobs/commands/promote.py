"""`photoscore promote`: point an alias (champion, challenger) at a registered version."""
from __future__ import annotations


def register(subparsers) -> None:
    from models.registry import ALIASES

    p = subparsers.add_parser("promote", help="give a model version an alias", description=__doc__)
    p.add_argument("--name", default=None, help="registered model name (default: config mlflow.model_name)")
    p.add_argument("--version", required=True, help="version number")
    p.add_argument("--alias", required=True, choices=ALIASES)
    p.set_defaults(handler=run)


def run(args, settings) -> int:
    from models.registry import promote

    name = args.name or settings.mlflow.model_name
    promote(settings, name, args.version, args.alias)
    print(f"{name}@{args.alias} -> version {args.version}")
    return 0
