"""`photoscore upload --input DIR [--rate R] [--limit N]`: publish upload messages for photo files."""
from __future__ import annotations

import time


def register(subparsers) -> None:
    p = subparsers.add_parser("upload", help="publish photos.uploaded messages for photo files",
                              description=__doc__ + " Each file becomes one message (key = photo_id, the "
                              "file's absolute path, as the batch backfill names it; uri = its file:// URI; content_sha256 = the sha256 "
                              "of its bytes, which lets the stream job key it by content before any Python step).")
    p.add_argument("--input", required=True, nargs="+", metavar="PATH", help="files and folders")
    p.add_argument("--rate", type=float, default=0.0, help="messages per second (0: as fast as possible)")
    p.add_argument("--limit", type=int, default=0, help="at most N messages (0: every file)")
    p.add_argument("--inline", action="store_true", help="send the bytes inline (inline_b64) instead of a uri")
    p.add_argument("--timeout", type=float, default=600.0, help="give up after this many seconds")
    p.set_defaults(handler=run)


def run(args, settings) -> int:
    from jobs.broker import bootstrap_servers
    from jobs.local_features import list_inputs
    from jobs.topic_io import upload_files

    bootstrap = bootstrap_servers(settings)
    paths = list_inputs(args.input)
    t0 = time.monotonic()
    sent = len(upload_files(bootstrap, settings.kafka.topics.uploaded, paths, args.rate, args.limit,
                            args.inline, args.timeout))
    elapsed = time.monotonic() - t0
    print(f"uploaded={sent} topic={settings.kafka.topics.uploaded} bootstrap={bootstrap} "
          f"seconds={elapsed:.2f}")
    return 0
