"""`photoscore tail scores|scores_shadow|dlq|uploaded`: print the records of one topic (JSON lines):
photos.scores (served scores), photos.scores.shadow (a rollout's shadow scores and shadow failures),
photos.dlq, photos.uploaded."""
from __future__ import annotations

import sys


def register(subparsers) -> None:
    p = subparsers.add_parser("tail", help="print records from photos.scores, photos.scores.shadow or photos.dlq",
                              description=__doc__)
    p.add_argument("topic", choices=("scores", "scores_shadow", "dlq", "uploaded"),
                   help="scores: served scores; scores_shadow: shadow scores and failures of rollouts")
    p.add_argument("--follow", "-f", action="store_true", help="keep waiting for new records")
    p.add_argument("--limit", type=int, default=0, help="stop after N records (0: no limit)")
    p.add_argument("--idle", type=float, default=3.0, help="without --follow, stop after this many idle seconds")
    p.set_defaults(handler=run)


def run(args, settings) -> int:
    from jobs.broker import bootstrap_servers, fetch_wait_ms
    from jobs.topic_io import read_topic

    topic = getattr(settings.kafka.topics, args.topic)
    n = 0
    for _, _, value in read_topic(bootstrap_servers(settings), topic, args.idle, args.limit, args.follow,
                                  fetch_wait_ms(settings)):
        sys.stdout.write((value or b"").decode("utf-8", "replace") + "\n")
        sys.stdout.flush()
        n += 1
    print(f"# {n} records from {topic}", file=sys.stderr)
    return 0
