"""`photoscore stream start|stop|status`: the PyFlink scoring job (jobs/stream_score.py).

By default the job runs in Flink's local mini-cluster as a supervised process (pid file and log
under PHOTOSCORE_HOME/stream); with `flink.jobmanager` set (HOST:PORT of a Flink session cluster's
REST endpoint) it is submitted there with `flink run` instead. Either way it resumes from the
newest retained checkpoint under `flink.checkpoint_dir`. See jobs/stream_supervisor.py.
"""
from __future__ import annotations

from jobs.model_args import add_model_arguments, with_model_arguments
from jobs.stream_supervisor import start_stream, stop_stream, stream_status


def register(subparsers) -> None:
    p = subparsers.add_parser("stream", help="start, stop or inspect the PyFlink scoring job",
                              description=__doc__)
    p.add_argument("action", choices=("start", "stop", "status"))
    add_model_arguments(p)
    p.add_argument("--fresh", action="store_true", help="start without restoring the newest checkpoint")
    p.set_defaults(handler=run)


def run(args, settings) -> int:
    if args.action == "start":
        info = start_stream(with_model_arguments(args, settings), restore=not args.fresh)
        for k, v in info.items():
            print(f"{k}={v}")
        return 0
    if args.action == "stop":
        print("stopped" if stop_stream(settings) else "not running")
        return 0
    status = stream_status(settings)
    urls = {"metrics_url": "metrics", "dashboard_url": "dashboard"}  # the Prometheus page, the Flink REST/web UI
    for k, v in status.items():
        print(f"{urls.get(k, k)}={v}")
    return 0 if status.get("running") else 1
