"""`photoscore tail scores|dlq`: print the records of photos.scores or photos.dlq (JSON lines)."""
from __future__ import annotations

import sys
import time


def register(subparsers) -> None:
    p = subparsers.add_parser("tail", help="print records from photos.scores or photos.dlq", description=__doc__)
    p.add_argument("topic", choices=("scores", "dlq", "uploaded"))
    p.add_argument("--follow", "-f", action="store_true", help="keep waiting for new records")
    p.add_argument("--limit", type=int, default=0, help="stop after N records (0: no limit)")
    p.add_argument("--idle", type=float, default=3.0, help="without --follow, stop after this many idle seconds")
    p.set_defaults(handler=run)


def read_topic(bootstrap: str, topic: str, idle_s: float = 3.0, limit: int = 0, follow: bool = False,
               fetch_wait_ms: int = 500):
    """Yield (partition, offset, value bytes) of every record from the beginning of `topic`.

    No consumer group: every partition is assigned and read from its earliest offset, so tailing
    never moves anyone's committed offsets (and does not rely on ListOffsets(latest)).
    `fetch_wait_ms` is the consumer's fetch.max.wait.ms: `jobs.broker.fetch_wait_ms(settings)` gives
    the broker's (too short a wait on the durable Tansu broker returns nothing at all).
    """
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None,
                             fetch_max_wait_ms=fetch_wait_ms, client_id="photoscore-tail")
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        if not parts:
            return
        consumer.assign([TopicPartition(topic, p) for p in sorted(parts)])
        consumer.seek_to_beginning()
        seen, last = 0, time.monotonic()
        while follow or time.monotonic() - last < idle_s:
            batch = consumer.poll(timeout_ms=200)
            for records in batch.values():
                for r in records:
                    last = time.monotonic()
                    yield r.partition, r.offset, r.value
                    seen += 1
                    if limit and seen >= limit:
                        return
    finally:
        consumer.close()


def run(args, settings) -> int:
    from jobs.broker import bootstrap_servers, fetch_wait_ms

    topic = getattr(settings.kafka.topics, args.topic)
    n = 0
    for _, _, value in read_topic(bootstrap_servers(settings), topic, args.idle, args.limit, args.follow,
                                  fetch_wait_ms(settings)):
        sys.stdout.write((value or b"").decode("utf-8", "replace") + "\n")
        sys.stdout.flush()
        n += 1
    print(f"# {n} records from {topic}", file=sys.stderr)
    return 0
