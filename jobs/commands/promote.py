"""`photoscore promote`: point an alias (champion, challenger) at a registered version, recorded in
the model's audit trail (`photoscore models --history`)."""
from __future__ import annotations


def register(subparsers) -> None:
    from models.registry import ALIASES

    p = subparsers.add_parser("promote", help="give a model version an alias", description=__doc__)
    p.add_argument("--name", default=None, help="registered model name (default: config mlflow.model_name)")
    p.add_argument("--version", required=True, type=int, help="version number")
    p.add_argument("--alias", required=True, choices=ALIASES)
    p.add_argument("--why", default="", help="reason recorded in the audit trail")
    p.set_defaults(handler=run)


def run(args, settings) -> int:
    from models.rollouts import promote

    name = args.name or settings.mlflow.model_name
    before = promote(settings, name, args.version, args.alias, why=args.why)
    print(f"{name}@{args.alias} -> version {args.version}" + (f" (was v{before})" if before is not None else ""))
    return 0
