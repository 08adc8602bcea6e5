"""`photoscore broker start|stop|status`: the embedded Kafka-protocol broker (Tansu) on loopback."""
from __future__ import annotations


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "broker", help="start, stop or inspect the embedded Kafka-protocol broker",
        description=__doc__ + " Durable mode keeps messages and offsets in a local SeaweedFS (S3) "
                    "under PHOTOSCORE_HOME; ephemeral mode keeps them in memory. With "
                    "PHOTOSCORE_KAFKA_BOOTSTRAP set, nothing local starts.")
    p.add_argument("action", choices=("start", "stop", "status"))
    p.add_argument("--mode", choices=("durable", "ephemeral"), default=None,
                   help="storage mode for start (default: config kafka.embedded_mode, else durable)")
    p.set_defaults(handler=run)


def run(args, settings) -> int:
    from jobs.broker import broker_status, external_bootstrap, start_broker, stop_broker

    if args.action == "start":
        if external_bootstrap(settings):
            print(f"bootstrap={external_bootstrap(settings)} (external cluster: nothing local started)")
            return 0
        state = start_broker(settings, mode=args.mode)
        print(f"bootstrap={state['bootstrap']}\nmode={state['mode']}\ntansu_pid={state['tansu_pid']}")
        if state.get("seaweedfs_pid"):
            print(f"seaweedfs_pid={state['seaweedfs_pid']}\ns3_endpoint={state['s3_endpoint']}")
        print(f"log={state['log']}")
        return 0
    if args.action == "stop":
        print("stopped" if stop_broker(settings) else "not running")
        return 0
    status = broker_status(settings)
    for key in ("bootstrap", "mode", "running", "healthy", "tansu_pid", "seaweedfs_pid", "log", "error"):
        if status.get(key) not in (None, ""):
            print(f"{key}={status[key]}")
    if status.get("topics") is not None:
        print(f"topics={','.join(status['topics'])}")
    return 0 if status.get("healthy") else 1
