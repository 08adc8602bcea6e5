"""`photoscore ui [--airflow] [--status] [--stop]`: the operator's views in one list, every one on
127.0.0.1: the MLflow UI (started when not running), the Airflow UI (started with --airflow), the
stream's Flink dashboard and metrics endpoint, and the newest monitor report. `--stop` stops only
what `ui` started. See jobs/operator_views.py.
"""
from __future__ import annotations


def register(subparsers) -> None:
    p = subparsers.add_parser("ui", help="start and list the operator's views (MLflow, Airflow, Flink, reports)",
                              description=__doc__)
    action = p.add_mutually_exclusive_group()
    action.add_argument("--status", action="store_true", help="list the views, start nothing")
    action.add_argument("--stop", action="store_true", help="stop what `photoscore ui` started")
    p.add_argument("--airflow", action="store_true", help="also start Airflow when it is not running")
    p.set_defaults(handler=run)


def run(args, settings) -> int:
    from jobs.operator_views import collect_views, stop_views, view_lines

    if args.stop:
        stopped = stop_views(settings)
        print(f"stopped: {', '.join(stopped) or 'nothing photoscore ui started was running'}")
        return 0
    for line in view_lines(collect_views(settings, start=not args.status, start_airflow=args.airflow and not args.status)):
        print(line)
    return 0
