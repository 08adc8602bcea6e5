"""Upload message parsing/validation and score/DLQ record encoding (udfs/messages.py)."""
from __future__ import annotations

import base64
import json

import pytest

from udfs.messages import (Upload, decode_record, encode_dlq, encode_score, encode_upload, parse_upload,
                           source_ref)
from udfs.quarantine import REASON_CODES, QuarantineRecord

REF = source_ref("photos.uploaded", 1, 42)
SHA = "ab" * 32


def test_source_ref_names_topic_partition_offset():
    assert REF == "photos.uploaded/1/42"


def test_round_trip_uri_and_inline():
    up = parse_upload(encode_upload("p1", "file:///x/p1.jpg", 123, SHA), REF)
    assert up == Upload("p1", "file:///x/p1.jpg", 123, SHA, None)
    up = parse_upload(encode_upload("p2", inline=b"\xff\xd8bytes", uploaded_at_ms=5), REF)
    assert isinstance(up, Upload) and up.uri is None and up.inline_bytes() == b"\xff\xd8bytes"


@pytest.mark.parametrize("raw, code, photo_id", [
    (None, "malformed_message", None),
    (b"{not json", "malformed_message", None),
    (b"\xff\xfe\x00garbage", "malformed_message", None),
    (b"[1, 2]", "malformed_message", None),
    (json.dumps({"photo_id": "a", "uri": "u", "uploaded_at_ms": 1}), "missing_field", "a"),
    (json.dumps({"schema": 2, "photo_id": "a", "uri": "u", "uploaded_at_ms": 1}), "malformed_message", "a"),
    (json.dumps({"schema": 1, "uri": "u", "uploaded_at_ms": 1}), "missing_field", None),
    (json.dumps({"schema": 1, "photo_id": "", "uri": "u", "uploaded_at_ms": 1}), "missing_field", None),
    (json.dumps({"schema": 1, "photo_id": 7, "uri": "u", "uploaded_at_ms": 1}), "malformed_message", None),
    (json.dumps({"schema": 1, "photo_id": "a", "uri": "u"}), "missing_field", "a"),
    (json.dumps({"schema": 1, "photo_id": "a", "uri": "u", "uploaded_at_ms": "soon"}), "malformed_message", "a"),
    (json.dumps({"schema": 1, "photo_id": "a", "uri": "u", "uploaded_at_ms": True}), "malformed_message", "a"),
    (json.dumps({"schema": 1, "photo_id": "a", "uploaded_at_ms": 1}), "missing_field", "a"),
    (json.dumps({"schema": 1, "photo_id": "a", "uri": "", "uploaded_at_ms": 1}), "missing_field", "a"),
    (json.dumps({"schema": 1, "photo_id": "a", "uri": 5, "uploaded_at_ms": 1}), "malformed_message", "a"),
    (json.dumps({"schema": 1, "photo_id": "a", "inline_b64": "!!notb64", "uploaded_at_ms": 1}),
     "malformed_message", "a"),
    (json.dumps({"schema": 1, "photo_id": "a", "inline_b64": "QUJD\nREVG", "uploaded_at_ms": 1}),
     "malformed_message", "a"),
    (json.dumps({"schema": 1, "photo_id": "a", "inline_b64": "QUJDR", "uploaded_at_ms": 1}),
     "malformed_message", "a"),
    (json.dumps({"schema": 1, "photo_id": "a", "inline_b64": "QU=D", "uploaded_at_ms": 1}),
     "malformed_message", "a"),
    (json.dumps({"schema": 1, "photo_id": "a", "uri": "u", "uploaded_at_ms": 1, "content_sha256": "XYZ"}),
     "malformed_message", "a"),
])
def test_bad_messages_are_parse_records_with_reason(raw, code, photo_id):
    rec = parse_upload(raw, REF)
    assert isinstance(rec, QuarantineRecord)
    assert (rec.stage, rec.reason_code, rec.photo_id, rec.source_ref) == ("parse", code, photo_id, REF)
    assert rec.reason_code in REASON_CODES and rec.detail


def test_score_record_encoding_keeps_identity_and_types():
    row = {"photo_id": "p", "content_sha256": SHA, "model_name": "m", "model_version": 3,
           "export_format": "onnx", "score": 0.1234567890123, "feature_version": 1,
           "scored_at_ms": 99, "source": "stream", "from_cache": False, "role": "shadow"}
    out = decode_record(encode_score(row, uploaded_at_ms=50, upload_ref=REF))
    assert out == {**row, "uploaded_at_ms": 50, "upload_ref": REF}
    assert out["score"] == row["score"]  # JSON floats round-trip exactly
    with pytest.raises(ValueError, match="lacks"):
        encode_score({"photo_id": "p"})


def test_dlq_record_encoding():
    rec = QuarantineRecord(REF, "p", "decode", "not_an_image", "nope", 7)
    out = decode_record(encode_dlq(rec, uploaded_at_ms=3).encode())
    assert out == {"source_ref": REF, "photo_id": "p", "stage": "decode", "reason_code": "not_an_image",
                   "detail": "nope", "seen_at_ms": 7, "uploaded_at_ms": 3}


def test_inline_wins_over_uri():
    raw = json.dumps({"schema": 1, "photo_id": "a", "uri": "/nope", "uploaded_at_ms": 1,
                      "inline_b64": base64.b64encode(b"x").decode()})
    assert parse_upload(raw, REF).inline_bytes() == b"x"


def test_a_message_over_the_maximum_is_refused_unparsed():
    ok = encode_upload("p", "file:///x/p.jpg", 1)
    assert isinstance(parse_upload(ok, REF, max_bytes=len(ok)), Upload)
    for raw in (ok, ok.decode(), b"{" + b" " * len(ok) + b"}", b"\xff" * (len(ok) + 1)):
        rec = parse_upload(raw, REF, max_bytes=len(ok) - 1 if raw in (ok, ok.decode()) else len(ok))
        assert (rec.stage, rec.reason_code, rec.photo_id) == ("parse", "message_too_large", None), raw[:20]
    wide = json.dumps({"schema": 1, "photo_id": "é" * 10, "uri": "u", "uploaded_at_ms": 1}, ensure_ascii=False)
    assert parse_upload(wide, REF, max_bytes=len(wide) + 5).reason_code == "message_too_large"  # UTF-8 bytes


@pytest.mark.parametrize("size", range(0, 9))
def test_inline_size_is_known_before_decoding(size):
    data = bytes(range(size))
    up = parse_upload(encode_upload("p", inline=data, uploaded_at_ms=1), REF)
    if size == 0:  # an empty inline value is no inline photo
        assert isinstance(up, QuarantineRecord) and up.reason_code == "missing_field"
        return
    assert up.inline_size() == size and up.inline_bytes() == data
