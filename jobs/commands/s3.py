"""`photoscore s3 up|down|status`: the local S3 photo store (SeaweedFS on 127.0.0.1)."""
from __future__ import annotations

import shlex


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "s3", help="start, stop or inspect the local S3 photo store",
        description=__doc__ + " Its data and generated keys live under PHOTOSCORE_HOME/s3. `up` and "
                    "`status` print the variables a client needs as shell exports: "
                    "eval \"$(photoscore s3 up)\" points this shell's photoscore at it.")
    p.add_argument("action", choices=("up", "down", "status"))
    p.set_defaults(handler=run)


def run(args, settings) -> int:
    from jobs.s3_store import client_env, s3_store_status, start_s3_store, stop_s3_store

    if args.action == "down":
        print("# stopped" if stop_s3_store(settings) else "# not running")
        return 0
    if args.action == "up":
        start_s3_store(settings)
    status = s3_store_status(settings)
    if not status["running"]:
        print(f"# not running (log {status['log']})")
        return 1
    print(f"# S3 photo store: bucket s3://{status['bucket']}/ pid {status['pid']} log {status['log']}")
    for key, value in client_env(settings).items():
        print(f"export {key}={shlex.quote(value)}")
    return 0
