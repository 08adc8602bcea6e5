"""`photoscore rollout set|status|stop`: a registered model's rollout plan in the registry - which
challenger, on which share of contents in shadow (scored, never served) and in canary (served) -
with every change in the audit trail (`photoscore models --history`)."""
from __future__ import annotations

import json


def _name_arg(p) -> None:
    p.add_argument("--name", default=None, help="registered model (default: config mlflow.model_name)")


def _percent(text: str) -> float:
    import argparse

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= value <= 100.0:
        raise argparse.ArgumentTypeError(f"{text} is not a share from 0 to 100")
    return value


def register(subparsers) -> None:
    parser = subparsers.add_parser("rollout", help="set, show or stop a model's rollout (shadow / canary)",
                                   description=__doc__)
    actions = parser.add_subparsers(dest="rollout_action", metavar="ACTION", required=True)
    set_ = actions.add_parser("set", help="start or change the rollout of a challenger")
    _name_arg(set_)
    set_.add_argument("--challenger", type=int, default=None,
                      help="version to try (default: the `challenger` alias, else the running rollout's)")
    set_.add_argument("--shadow", type=_percent, default=None, metavar="PCT",
                      help="share of contents the challenger also scores, never served (default: unchanged, 0 new)")
    set_.add_argument("--canary", type=_percent, default=None, metavar="PCT",
                      help="share of contents whose served score is the challenger's (default: unchanged, 0 new)")
    set_.add_argument("--why", default="", help="reason recorded in the audit trail")
    status = actions.add_parser("status", help="the plan, its arms and the newest audit events")
    _name_arg(status)
    status.add_argument("--json", action="store_true", help="print JSON")
    stop = actions.add_parser("stop", help="end the rollout: the champion alone scores and serves")
    _name_arg(stop)
    stop.add_argument("--why", default="", help="reason recorded in the audit trail")
    parser.set_defaults(handler=run)


def run(args, settings) -> int:
    from jobs.rollout_view import status_dict, status_lines
    from models.rollouts import history, read_plan, set_rollout, stop_rollout

    name = args.name or settings.mlflow.model_name
    if args.rollout_action == "set":
        plan = set_rollout(settings, name, shadow_percent=args.shadow, canary_percent=args.canary,
                           challenger=args.challenger, why=args.why)
        print(plan.describe())
    elif args.rollout_action == "stop":
        print(stop_rollout(settings, name, why=args.why).describe())
    elif args.json:
        print(json.dumps(status_dict(read_plan(settings, name), history(settings, name)), indent=2))
    else:
        print("\n".join(status_lines(read_plan(settings, name), history(settings, name))))
    return 0
