"""Confined, bounded photo reads (udfs/photo_io.py): only under the photo roots, only regular
files, byte and time limits enforced while reading, transient failures retried and never turned
into a quarantine, permanent ones quarantined with their reason; and the local `photoscore
features` command on the same bad inputs."""
from __future__ import annotations

import errno
import os
import socket
from pathlib import Path

import pandas as pd
import pytest

from _photo_fixtures import reader_for, settings_for
from jobs.config import ConfigError
from jobs.local_features import extract_features_from_uri
from udfs.decode import DecodeLimits, PhotoRejected
from udfs.errors import PhotoscoreError, TransientReadError
from udfs.features import FeatureRow
from udfs.photo_io import photo_reader
from udfs.quarantine import REASON_CODES, QuarantineRecord


@pytest.fixture
def photos(tmp_path) -> Path:
    """A photo root holding one file, and an `outside` folder next to it."""
    root = tmp_path / "photos"
    root.mkdir()
    (root / "a.jpg").write_bytes(b"\xff\xd8" + b"a" * 98)
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.jpg").write_bytes(b"secret")
    return root


def _reason(reader, uri: str, max_bytes: int = 1000) -> str:
    with pytest.raises(PhotoRejected) as info:
        reader.read(uri, max_bytes)
    assert info.value.stage == "read" and info.value.reason_code in REASON_CODES and uri in info.value.detail
    return info.value.reason_code


def test_photos_under_a_root_are_read_by_path_or_file_uri(photos):
    reader = reader_for(photos)
    data = (photos / "a.jpg").read_bytes()
    assert reader.read(str(photos / "a.jpg"), 1000) == data
    assert reader.read((photos / "a.jpg").as_uri(), 1000) == data
    assert reader.read(f"file://localhost{photos / 'a.jpg'}", 1000) == data
    (photos / "sub").mkdir()
    (photos / "sub" / "in.jpg").symlink_to(photos / "a.jpg")  # a link that stays inside is fine
    assert reader.read(str(photos / "sub" / "in.jpg"), 1000) == data
    assert reader.read(str(photos / "sub" / ".." / "a.jpg"), 1000) == data
    linked_root = photos.parent / "linked"
    linked_root.symlink_to(photos)  # a root may itself be a link
    assert reader_for(linked_root).read(str(linked_root / "a.jpg"), 1000) == data


def test_anything_outside_the_roots_is_refused_before_it_is_read(photos, fake_store):
    (photos / "escape.jpg").symlink_to(photos.parent / "outside" / "secret.jpg")
    (photos / "passwd.jpg").symlink_to("/etc/passwd")
    (photos / "etc").symlink_to("/etc")
    reader = reader_for(photos, "s3://uploads/photos")
    refused = [
        "/etc/passwd", "file:///etc/passwd", "FILE:///etc/passwd", "file:///proc/self/environ", "/dev/zero",
        str(photos / "escape.jpg"), str(photos / "passwd.jpg"), str(photos / "etc" / "passwd"),
        str(photos / ".." / "outside" / "secret.jpg"), f"{photos}/../outside/secret.jpg",
        str(photos) + "-sibling/a.jpg", f"file://otherhost{photos / 'a.jpg'}", f"{(photos / 'a.jpg').as_uri()}?x",
        "s3://uploads/other/a.jpg", "s3://uploads/photos-private/a.jpg", "s3://elsewhere/photos/a.jpg",
        "s3://uploads/photos/../other/a.jpg", "s3://uploads/photos//a.jpg", "s3://uploads/photos/a.jpg?versionId=1",
        "s3a://uploads/photos/a.jpg", "gs://uploads/photos/a.jpg", "http://127.0.0.1/a.jpg", "photos/\0.jpg",
    ]
    for uri in refused:
        assert _reason(reader, uri) == "uri_not_allowed", uri
    assert not (fake_store.root / ".attempts").exists()  # the store was never asked


def test_only_regular_files_are_read_and_nothing_blocks(photos, tmp_path):
    os.mkfifo(photos / "fifo.jpg")  # opened for reading it would block until a writer came
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(photos / "sock.jpg"))
    (photos / "dir.jpg").mkdir()
    reader = reader_for(photos, "/dev")
    try:
        for uri in (photos / "fifo.jpg", photos / "sock.jpg", photos / "dir.jpg", photos, "/dev/zero", "/dev/null"):
            assert _reason(reader, str(uri)) == "not_a_regular_file", uri
    finally:
        sock.close()
    assert _reason(reader, str(photos / "gone.jpg")) == "unreadable_uri"


def test_the_byte_limit_holds_while_reading_whatever_stat_says(photos):
    big = photos / "big.jpg"
    big.write_bytes(b"\xff" * 2048)
    reader = reader_for(photos, "/proc/self")
    assert _reason(reader, str(big), max_bytes=2047) == "file_too_large"
    assert len(reader.read(str(big), 2048)) == 2048
    assert os.stat("/proc/self/status").st_size == 0  # stat says empty; the file is not
    assert _reason(reader, "/proc/self/status", max_bytes=64) == "file_too_large"
    assert len(reader.read("/proc/self/status", 1 << 20)) > 64


def test_transient_store_failures_are_retried_then_raised_never_rejected(photos, fake_store):
    reader = reader_for(photos, "s3://uploads/", read_attempts=3, read_backoff_s=0)
    uri = fake_store.put("s3://uploads/p/a.jpg", b"photo")
    fake_store.set_flaky("uploads", 2)
    assert reader.read(uri, 100) == b"photo" and fake_store.attempts(uri) == 3
    fake_store.set_down("uploads")
    with pytest.raises(TransientReadError):
        reader.read(uri, 100)
    assert fake_store.attempts(uri) == 3 + 3
    fake_store.set_down("uploads", False)
    fake_store.set_flaky("uploads", 0)
    # Permanent answers are not retried: a missing object, one over the limit.
    assert _reason(reader, "s3://uploads/p/gone.jpg") == "unreadable_uri"
    assert fake_store.attempts("s3://uploads/p/gone.jpg") == 1
    assert _reason(reader, uri, max_bytes=4) == "file_too_large"


def test_transient_local_failures_are_retried_too(photos, monkeypatch):
    import udfs.photo_io

    reader = reader_for(photos, read_attempts=2, read_backoff_s=0, read_timeout_s=1e-9)
    with pytest.raises(TransientReadError, match="not done after"):
        reader.read(str(photos / "a.jpg"), 1000)  # the time limit: a hung network mount
    calls = []

    def stale(path, flags):
        calls.append(path)
        raise OSError(errno.ESTALE, os.strerror(errno.ESTALE), path)

    monkeypatch.setattr(udfs.photo_io.os, "open", stale)
    with pytest.raises(TransientReadError, match="tale"):
        reader_for(photos, read_attempts=3, read_backoff_s=0).read(str(photos / "a.jpg"), 1000)
    assert len(calls) == 3


def test_roots_are_typed_and_resolved(tmp_path):
    settings = settings_for("rel/photos", "s3://bucket/prefix", "s3://whole", overrides=(f"home={tmp_path}",))
    assert settings.storage.photo_roots == ["rel/photos", "s3://bucket/prefix/", "s3://whole/"]
    reader = photo_reader(settings, [str(tmp_path / "given")])
    assert reader.local_roots == (str(tmp_path / "rel" / "photos"), str(tmp_path / "given"))
    assert reader.s3_roots == ("s3://bucket/prefix/", "s3://whole/")
    for bad in ("gs://bucket/", "http://host/photos", "s3://bad bucket/", "s3://user@bucket/"):
        with pytest.raises(ConfigError, match="photo_roots"):
            settings_for(bad)
    with pytest.raises(PhotoscoreError, match="hdfs"):
        photo_reader(settings, ["hdfs://namenode/photos"])


def test_local_extraction_quarantines_bad_reads_and_raises_transient(photos, corpus_labels, fake_store):
    good = Path(corpus_labels["photo_id"].iloc[0])
    (photos / "good.jpg").write_bytes(good.read_bytes())
    os.mkfifo(photos / "fifo.jpg")
    reader = reader_for(photos, "s3://down/", read_attempts=2, read_backoff_s=0)
    out = {uri: extract_features_from_uri(uri, reader, DecodeLimits(max_file_bytes=1 << 20))
           for uri in (str(photos / "fifo.jpg"), "/etc/passwd", str(photos / "good.jpg"))}
    assert [r.reason_code for r in out.values() if isinstance(r, QuarantineRecord)] == \
        ["not_a_regular_file", "uri_not_allowed"]
    assert isinstance(out[str(photos / "good.jpg")], FeatureRow)
    fake_store.set_down("down")
    with pytest.raises(TransientReadError):
        extract_features_from_uri("s3://down/a.jpg", reader)


def test_features_command_confines_reads_to_its_inputs_and_roots(photos, corpus_labels, tmp_path, monkeypatch):
    """`photoscore features --input DIR`: DIR is the operator's choice, links out of it are refused,
    a device or FIFO is never read, and inputs = featured + quarantined."""
    from jobs.cli import main

    good = [Path(p) for p in corpus_labels["photo_id"][:2]]
    for p in good:
        (photos / p.name).write_bytes(p.read_bytes())
    (photos / "a.jpg").unlink()
    os.mkfifo(photos / "fifo.jpg")
    (photos / "passwd.jpg").symlink_to("/etc/passwd")
    (photos / "zero.jpg").symlink_to("/dev/zero")
    (photos / "environ.jpg").symlink_to("/proc/self/environ")
    (photos / "escape.jpg").symlink_to(photos.parent / "outside" / "secret.jpg")
    monkeypatch.setenv("PHOTOSCORE_HOME", str(tmp_path / "home"))
    out = tmp_path / "out"
    assert main(["features", "--input", str(photos), "--out", str(out), "--workers", "1"]) == 0
    features = pd.read_parquet(out / "features.parquet")
    quarantine = pd.read_parquet(out / "quarantine.parquet")
    reasons = dict(zip(quarantine["source_ref"].map(lambda r: Path(r).name), quarantine["reason_code"]))
    assert reasons == {"fifo.jpg": "not_a_regular_file", "passwd.jpg": "uri_not_allowed", "zero.jpg": "uri_not_allowed",
                       "environ.jpg": "uri_not_allowed", "escape.jpg": "uri_not_allowed"}
    assert sorted(Path(p).name for p in features["photo_id"]) == sorted(p.name for p in good)
