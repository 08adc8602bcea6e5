"""`photoscore rollback`: the champion back to the previous champion (from the audit trail) in one
call, any rollout stopped, and the move recorded."""
from __future__ import annotations


def register(subparsers) -> None:
    p = subparsers.add_parser("rollback", help="champion back to the previous champion", description=__doc__)
    p.add_argument("--name", default=None, help="registered model (default: config mlflow.model_name)")
    p.add_argument("--why", default="", help="reason recorded in the audit trail")
    p.set_defaults(handler=run)


def run(args, settings) -> int:
    from models.rollouts import rollback

    name = args.name or settings.mlflow.model_name
    before, after = rollback(settings, name, why=args.why)
    print(f"champion of {name}: v{before} -> v{after}")
    return 0
