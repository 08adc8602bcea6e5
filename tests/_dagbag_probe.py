"""Run in a subprocess with the embedded Airflow's environment: parse airflow_dags/ with Airflow's
own DagBag and print what the tests check, as JSON."""
from __future__ import annotations

import json
import sys
import time
import warnings
from pathlib import Path

import airflow.sdk  # noqa: F401 - the dag-processor has Airflow loaded before it parses a file
from airflow.dag_processing.dagbag import DagBag

# Each file's parse in CPU seconds of this process (wall time would measure the machine's load):
# the first pays for photoscore's config loader too, as a dag-processor's first parse would.
parse_cpu = {}
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    for path in sorted(Path(sys.argv[1]).glob("*.py")):
        started = time.process_time()
        DagBag(dag_folder=str(path))
        parse_cpu[path.name] = time.process_time() - started
    bag = DagBag(dag_folder=sys.argv[1])
dags = {}
for dag_id in bag.dag_ids:
    dag = bag.dags[dag_id]
    dags[dag_id] = {
        "timetable": type(dag.timetable).__name__,
        "cron": getattr(getattr(dag.timetable, "timetable", dag.timetable), "expression", None),
        "on_any_of": sorted(asset.name for asset in getattr(getattr(dag.timetable, "asset_condition", None),
                                                            "objects", [])),
        "catchup": dag.catchup,
        "params": {key: dag.params.get_param(key).schema for key in dag.params},
        "tasks": {t.task_id: {"upstream": sorted(t.upstream_task_ids), "retries": t.retries,
                              "timeout_s": t.execution_timeout.total_seconds() if t.execution_timeout else None,
                              "backoff": t.retry_exponential_backoff, "teardown": t.is_teardown,
                              "type": getattr(t, "operator_name", None) or type(t).__name__}
                  for t in dag.tasks},
    }
print(json.dumps({"errors": bag.import_errors, "warnings": [str(w.message) for w in caught]
                  + [str(w) for ws in getattr(bag, "captured_warnings", {}).values() for w in ws],
                  "dags": dags, "parse_cpu_s": parse_cpu}))
