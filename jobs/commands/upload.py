"""`photoscore upload --input DIR [--rate R] [--limit N]`: publish upload messages for photo files."""
from __future__ import annotations

import time
from pathlib import Path


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


def file_upload(photo_id: str, path: Path | str, inline: bool = False) -> bytes:
    """The upload message of one photo file: its file:// uri (or its bytes inline) and the sha256 of
    its bytes. The claimed hash lets the stream job key the photo by content in the JVM, before any
    Python step (the job verifies it against the bytes it reads)."""
    from udfs.features import content_sha256
    from udfs.messages import encode_upload

    data = Path(path).read_bytes()
    uri = None if inline else Path(path).absolute().as_uri()
    return encode_upload(photo_id, uri, content_sha256=content_sha256(data), inline=data if inline else None)


def upload_files(bootstrap: str, topic: str, paths: list[str] | list[Path], rate: float = 0.0, limit: int = 0,
                 inline: bool = False, timeout_s: float = 600.0, photo_ids: list[str] | None = None) -> list[str]:
    """Publish one upload per file (paced at `rate`/s, bounded by `limit` and `timeout_s`; photo_id
    the path unless `photo_ids` name them); returns the acknowledged records' `topic/partition/offset`
    refs, in sending order."""
    from kafka import KafkaProducer

    from udfs.errors import PhotoscoreError

    paths = paths[:limit] if limit else paths
    ids = photo_ids or [str(p) for p in paths]
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0, max_block_ms=15000,
                             client_id="photoscore-upload")
    start = time.monotonic()
    futures = []
    try:
        for i, (path, pid) in enumerate(zip(paths, ids)):
            if rate > 0:
                delay = start + i / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            if time.monotonic() - start > timeout_s:
                break
            futures.append(producer.send(topic, key=pid.encode(), value=file_upload(pid, path, inline)))
        producer.flush(timeout=max(1.0, timeout_s - (time.monotonic() - start)))
        refs = []
        for f in futures:
            try:
                record = f.get(timeout=5)
            except Exception as exc:  # noqa: BLE001 - kafka-python raises several types
                raise PhotoscoreError(f"the broker at {bootstrap} did not acknowledge an upload: {exc}") from None
            refs.append(f"{record.topic}/{record.partition}/{record.offset}")
        return refs
    finally:
        producer.close(timeout=5)


def run(args, settings) -> int:
    from jobs.broker import bootstrap_servers
    from jobs.commands.features import list_inputs

    bootstrap = bootstrap_servers(settings)
    paths = list_inputs(args.input)
    t0 = time.monotonic()
    sent = len(upload_files(bootstrap, settings.kafka.topics.uploaded, paths, args.rate, args.limit,
                            args.inline, args.timeout))
    elapsed = time.monotonic() - t0
    print(f"uploaded={sent} topic={settings.kafka.topics.uploaded} bootstrap={bootstrap} "
          f"seconds={elapsed:.2f}")
    return 0
