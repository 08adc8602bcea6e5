"""Kafka message shapes (DESIGN.md "Messages and rows"): parse and validate uploads, encode score
and dead-letter records. Pure functions: no I/O, no engine, so the Flink job, the CLI and tests
share them.

Upload (topic photos.uploaded, key = photo_id):
    {"schema": 1, "photo_id": str, "uri": str, "uploaded_at_ms": int,
     "content_sha256": str?, "inline_b64": str?}
A message must carry `uri` or `inline_b64` (inline bytes win when both are present). A message over
`kafka.max_message_bytes` is refused before it is parsed; `inline_b64` is checked for shape here and
decoded only after its size is checked against the photo byte limit (udfs.stream_scoring).
"""
from __future__ import annotations

import base64
import json
import math
import re
from dataclasses import asdict, dataclass
from typing import Any, Optional

from udfs.quarantine import QuarantineRecord, now_ms
from udfs.schemas import QUARANTINE, SCORE, json_record

UPLOAD_SCHEMA = 1
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
# What base64.b64decode(validate=True) accepts, checked without decoding (with len % 4 == 0).
_BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")


@dataclass(frozen=True)
class Upload:
    """A validated upload message."""

    photo_id: str
    uri: Optional[str]
    uploaded_at_ms: int
    content_sha256: Optional[str] = None
    inline_b64: Optional[str] = None

    def inline_bytes(self) -> Optional[bytes]:
        """The inline photo bytes (validated base64 at parse time), or None."""
        return base64.b64decode(self.inline_b64, validate=True) if self.inline_b64 is not None else None

    def inline_size(self) -> Optional[int]:
        """The size of the inline photo, from its encoded length alone (no decoding), or None."""
        if self.inline_b64 is None:
            return None
        return len(self.inline_b64) // 4 * 3 - self.inline_b64[-2:].count("=")


def source_ref(topic: str, partition: int, offset: int) -> str:
    """The DLQ source reference of a Kafka record: `topic/partition/offset`."""
    return f"{topic}/{partition}/{offset}"


def _reject(ref: str, photo_id: Optional[str], code: str, detail: str) -> QuarantineRecord:
    return QuarantineRecord(ref, photo_id, "parse", code, detail[:500], now_ms())


def parse_upload(raw: bytes | str | None, ref: str, max_bytes: Optional[int] = None) -> Upload | QuarantineRecord:
    """A raw message value -> Upload, or a `parse` QuarantineRecord (`message_too_large` when the
    value is over `max_bytes`, unparsed; `malformed_message` when it is not a JSON object of the
    expected shape and types, `missing_field` when a required field is absent or empty). Never raises."""
    if raw is None:
        return _reject(ref, None, "malformed_message", "empty (null) message value")
    size = len(raw) if isinstance(raw, (bytes, bytearray)) else len(raw.encode("utf-8", "surrogatepass"))
    if max_bytes is not None and size > max_bytes:
        return _reject(ref, None, "message_too_large", f"a message of {size} bytes > limit {max_bytes}")
    try:
        text = raw.decode("utf-8") if isinstance(raw, (bytes, bytearray)) else raw
        data = json.loads(text)
    except (UnicodeDecodeError, ValueError) as exc:
        return _reject(ref, None, "malformed_message", f"not JSON: {exc}")
    if not isinstance(data, dict):
        return _reject(ref, None, "malformed_message", f"expected a JSON object, got {type(data).__name__}")
    photo_id = data.get("photo_id")
    pid = photo_id if isinstance(photo_id, str) and photo_id else None
    if data.get("schema") != UPLOAD_SCHEMA:
        if "schema" not in data:
            return _reject(ref, pid, "missing_field", "field 'schema' is missing")
        return _reject(ref, pid, "malformed_message",
                       f"schema {data.get('schema')!r} is not supported (expected {UPLOAD_SCHEMA})")
    if pid is None:
        if photo_id in (None, ""):
            return _reject(ref, None, "missing_field", "field 'photo_id' is missing or empty")
        return _reject(ref, None, "malformed_message", f"photo_id must be a string, got {photo_id!r}")
    uploaded = data.get("uploaded_at_ms")
    if uploaded is None:
        return _reject(ref, pid, "missing_field", "field 'uploaded_at_ms' is missing")
    if isinstance(uploaded, bool) or not isinstance(uploaded, (int, float)) or not math.isfinite(uploaded):
        return _reject(ref, pid, "malformed_message", f"uploaded_at_ms must be an integer, got {uploaded!r}")
    uri, inline = data.get("uri"), data.get("inline_b64")
    for name, value in (("uri", uri), ("inline_b64", inline)):
        if value is not None and not isinstance(value, str):
            return _reject(ref, pid, "malformed_message", f"{name} must be a string, got {type(value).__name__}")
    if not uri and not inline:
        return _reject(ref, pid, "missing_field", "field 'uri' (or 'inline_b64') is missing or empty")
    if inline and (len(inline) % 4 or not _BASE64.fullmatch(inline)):
        return _reject(ref, pid, "malformed_message", "inline_b64 is not valid (padded, standard) base64")
    sha = data.get("content_sha256")
    if sha is not None and (not isinstance(sha, str) or not _SHA256.match(sha)):
        return _reject(ref, pid, "malformed_message", "content_sha256 must be 64 lowercase hex digits")
    return Upload(pid, uri or None, int(uploaded), sha, inline or None)


def encode_upload(photo_id: str, uri: Optional[str] = None, uploaded_at_ms: Optional[int] = None,
                  content_sha256: Optional[str] = None, inline: Optional[bytes] = None) -> bytes:
    """An upload message value (UTF-8 JSON) as `photoscore upload` publishes it."""
    msg: dict[str, Any] = {"schema": UPLOAD_SCHEMA, "photo_id": photo_id, "uri": uri or "",
                           "uploaded_at_ms": int(uploaded_at_ms if uploaded_at_ms is not None else now_ms())}
    if content_sha256:
        msg["content_sha256"] = content_sha256
    if inline is not None:
        msg["inline_b64"] = base64.b64encode(inline).decode("ascii")
    return json.dumps(msg, separators=(",", ":")).encode("utf-8")


def encode_score(row: dict[str, Any], uploaded_at_ms: Optional[int] = None,
                 upload_ref: Optional[str] = None) -> str:
    """A score row (udfs.schemas.SCORE) as the JSON value of photos.scores; ValueError when the
    row lacks a field.

    `uploaded_at_ms` and `upload_ref` (the upload's topic/partition/offset) are extra fields so a
    consumer can measure latency and match scores to uploads; the score's identity is
    (content_sha256, model_name, model_version).
    """
    out = json_record(SCORE, row)
    if uploaded_at_ms is not None:
        out["uploaded_at_ms"] = int(uploaded_at_ms)
    if upload_ref is not None:
        out["upload_ref"] = upload_ref
    return json.dumps(out, separators=(",", ":"))


def encode_dlq(record: QuarantineRecord, uploaded_at_ms: Optional[int] = None) -> str:
    """A quarantine record (udfs.schemas.QUARANTINE) as the JSON value of photos.dlq."""
    out = json_record(QUARANTINE, asdict(record))
    if uploaded_at_ms is not None:
        out["uploaded_at_ms"] = int(uploaded_at_ms)
    return json.dumps(out, separators=(",", ":"))


def decode_record(raw: bytes | str) -> dict[str, Any]:
    """A score or DLQ record value back to a dict of JSON values."""
    return json.loads(raw.decode("utf-8") if isinstance(raw, (bytes, bytearray)) else raw)
