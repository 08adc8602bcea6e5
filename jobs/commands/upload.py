"""`photoscore upload --input DIR [--to s3://BUCKET/PREFIX/] [--rate R] [--limit N]`: publish upload
messages for photo files, after copying them into an object store with --to."""
from __future__ import annotations

import time
from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser("upload", help="publish photos.uploaded messages for photo files",
                              description=__doc__ + " Each file becomes one message (key = photo_id: the "
                              "file's absolute path, as the batch backfill names it, or its s3:// URI with "
                              "--to; uri = its file:// or s3:// URI; content_sha256 = the sha256 "
                              "of its bytes, which lets the stream job key it by content before any Python step). "
                              "S3 endpoint and credentials: the AWS_* variables (`photoscore s3 up` prints "
                              "the local store's) or storage.s3.")
    p.add_argument("--input", required=True, nargs="+", metavar="PATH", help="files and folders")
    p.add_argument("--to", default=None, metavar="s3://BUCKET/PREFIX/",
                   help="copy the files there first (keys: paths relative to the input folders) and "
                        "publish their s3:// URIs, as an uploading service would")
    p.add_argument("--manifest", default=None, metavar="FILE.txt",
                   help="also write the published URIs there, one a line (a `backfill features --input`)")
    p.add_argument("--no-publish", action="store_true", help="with --to: copy only, publish nothing")
    p.add_argument("--rate", type=float, default=0.0, help="messages per second (0: as fast as possible)")
    p.add_argument("--limit", type=int, default=0, help="at most N messages (0: every file)")
    p.add_argument("--inline", action="store_true", help="send the bytes inline (inline_b64) instead of a uri")
    p.add_argument("--timeout", type=float, default=600.0, help="give up publishing after this many seconds")
    p.set_defaults(handler=run)


def run(args, settings) -> int:
    from jobs.local_features import list_inputs
    from udfs.errors import PhotoscoreError

    if args.to and args.inline:
        raise PhotoscoreError("--to copies the files and sends their URIs; --inline sends the bytes: pick one")
    if args.no_publish and not args.to:
        raise PhotoscoreError("--no-publish only makes sense with --to (it would do nothing)")
    paths = list_inputs(args.input)
    paths = paths[:args.limit] if args.limit else paths
    uris = None
    if args.to:
        from jobs.photo_upload import copy_to_store, object_uris

        uris = object_uris(paths, args.input, args.to)
        copy_to_store(paths, uris, settings.storage)
        print(f"copied={len(uris)} to={args.to}")
    if args.manifest:
        Path(args.manifest).write_text("".join(f"{u}\n" for u in uris or paths))
    if args.no_publish:
        return 0
    from jobs.broker import bootstrap_servers
    from jobs.topic_io import upload_files

    bootstrap = bootstrap_servers(settings)
    t0 = time.monotonic()
    sent = len(upload_files(bootstrap, settings.kafka.topics.uploaded, paths, args.rate, 0,
                            args.inline, args.timeout, photo_ids=uris, uris=uris))
    elapsed = time.monotonic() - t0
    print(f"uploaded={sent} topic={settings.kafka.topics.uploaded} bootstrap={bootstrap} "
          f"seconds={elapsed:.2f}")
    return 0
