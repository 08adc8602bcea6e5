"""Reading a topic from the beginning and publishing photo uploads: the Kafka I/O that
`photoscore tail` / `photoscore upload`, the stream demo, the bench and the tests share."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Iterator

from udfs.errors import PhotoscoreError


def read_topic(bootstrap: str, topic: str, idle_s: float = 3.0, limit: int = 0, follow: bool = False,
               fetch_wait_ms: int = 500) -> Iterator[tuple[int, int, bytes]]:
    """Yield (partition, offset, value bytes) of every record from the beginning of `topic`.

    No consumer group: every partition is assigned and read from its earliest offset, so tailing
    never moves anyone's committed offsets (and does not rely on ListOffsets(latest)). Stops after
    `idle_s` without a record (never with `follow`) or after `limit` records (0: no limit).
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


def file_upload(photo_id: str, path: Path | str, inline: bool = False, uri: str | None = None) -> bytes:
    """The upload message of one photo file: its file:// uri, or `uri` where it was copied to (an
    `s3://` one), or its bytes inline; and the sha256 of its bytes. The claimed hash lets the stream
    job key the photo by content in the JVM, before any Python step (the job verifies it against
    the bytes it reads)."""
    from udfs.features import content_sha256
    from udfs.messages import encode_upload

    data = Path(path).read_bytes()
    uri = None if inline else uri or Path(path).absolute().as_uri()
    return encode_upload(photo_id, uri, content_sha256=content_sha256(data), inline=data if inline else None)


def upload_files(bootstrap: str, topic: str, paths: list[str] | list[Path], rate: float = 0.0, limit: int = 0,
                 inline: bool = False, timeout_s: float = 600.0, photo_ids: list[str] | None = None,
                 uris: list[str] | None = None) -> list[str]:
    """Publish one upload per file (paced at `rate`/s, bounded by `limit` and `timeout_s`; photo_id
    the path unless `photo_ids` name them; the message's uri the file's own unless `uris` say where
    each was copied); returns the acknowledged records' `topic/partition/offset` refs, in sending
    order."""
    from kafka import KafkaProducer

    paths = paths[:limit] if limit else paths
    ids = photo_ids or [str(p) for p in paths]
    where = uris or [None] * len(paths)
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0, max_block_ms=15000,
                             client_id="photoscore-upload")
    start = time.monotonic()
    futures = []
    try:
        for i, (path, pid, uri) in enumerate(zip(paths, ids, where)):
            if rate > 0:
                delay = start + i / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            if time.monotonic() - start > timeout_s:
                break
            futures.append(producer.send(topic, key=pid.encode(), value=file_upload(pid, path, inline, uri)))
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
