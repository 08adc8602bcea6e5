"""`photoscore airflow up|down|status|test`: a real Airflow on the embedded default.

`up` starts Airflow's own processes (scheduler, dag-processor, triggerer, api-server) under
PHOTOSCORE_HOME/airflow with SQLite and LocalExecutor, every listener on 127.0.0.1 and the DAG
folder pointed at airflow_dags/, and prints the UI's address and the generated admin login.
`test DAG_ID` runs one DAG end to end with `airflow dags test` in the same environment and prints
its task states. See jobs/airflow_supervisor.py.
"""
from __future__ import annotations

import argparse
import json


def register(subparsers) -> None:
    p = subparsers.add_parser("airflow", help="run the photoscore DAGs on a real, embedded Airflow",
                              description=__doc__)
    p.add_argument("action", choices=("up", "down", "status", "test"))
    p.add_argument("dag_id", nargs="?", help="with test: the DAG to run (photoscore_backfill, ...)")
    p.add_argument("--conf", type=json.loads, default=None, metavar="JSON",
                   help="with test: the run's params, e.g. '{\"input\": [\"/data/photos\"]}'")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace, settings) -> int:
    from jobs import airflow_supervisor as af

    if args.action == "up":
        status = af.airflow_up(settings)
    elif args.action == "down":
        stopped = af.airflow_down(settings)
        print(f"stopped: {', '.join(stopped) or 'nothing was running'}")
        return 0
    elif args.action == "test":
        if not args.dag_id:
            print("photoscore airflow test: name the DAG, e.g. photoscore_backfill")
            return 2
        outcome = af.dags_test(settings, args.dag_id, args.conf)
        for task, state in outcome.states.items():
            print(f"  {task}: {state}")
        print(f"dag={args.dag_id} run={outcome.run_id} state={outcome.state}")
        return 0 if outcome.state == "success" else 1
    else:
        status = af.airflow_status(settings)
    for key, value in status.items():
        print(f"{key}={value}")
    return 0 if status["running"] else 1
