"""S3 reads and uploads (udfs/object_store.py, jobs/photo_upload.py, `photoscore upload --to`,
`photoscore s3`): a permanent failure is a PhotoRejected with its reason, a store that cannot answer
is a TransientReadError after one attempt, and the bytes read are the bytes uploaded. Unit tests
first (no server), then the real local store (integration)."""
from __future__ import annotations

import os
import signal

import pytest

from _s3_fixtures import kill_store, restart_store, upload
from jobs.config import load_settings
from jobs.photo_upload import object_uris
from jobs.supervise import free_port
from udfs import object_store
from udfs.decode import PhotoRejected
from udfs.errors import PhotoscoreError, TransientReadError
from udfs.object_store import is_s3_uri, read_object, s3_filesystem

LIMIT = 1 << 20


def storage_at(endpoint: str):
    return load_settings([f"storage.s3.endpoint_url={endpoint}", "storage.s3.region=us-east-1"], env={}).storage


def test_object_uris_keep_the_layout_under_the_prefix_and_refuse_clashes(tmp_path):
    (tmp_path / "a" / "sub").mkdir(parents=True)
    files = [str(tmp_path / "a" / "x.jpg"), str(tmp_path / "a" / "sub" / "y.jpg"), str(tmp_path / "z.png")]
    assert object_uris(files, [str(tmp_path / "a"), files[2]], "s3://b/up") == [
        "s3://b/up/x.jpg", "s3://b/up/sub/y.jpg", "s3://b/up/z.png"]
    with pytest.raises(PhotoscoreError, match="would both be uploaded"):
        object_uris([str(tmp_path / "a" / "x.jpg"), str(tmp_path / "x.jpg")], [], "s3://b/")
    for bad in ("/local/dir", "s3://", "gs://b/p/"):
        with pytest.raises(PhotoscoreError, match="expected s3://"):
            object_uris(files, [], bad)
    assert is_s3_uri("S3://b/k") and not is_s3_uri("file:///b/k")


def test_the_local_stores_keys_are_generated_once_readable_by_the_owner_only(tmp_path):
    from jobs.seaweedfs import s3_credentials

    path = tmp_path / "s3.json"
    access, secret = s3_credentials(path)
    assert (path.stat().st_mode & 0o777) == 0o600 and len(secret) == 32
    assert s3_credentials(path) == (access, secret)
    assert s3_credentials(tmp_path / "other.json")[1] != secret


def test_an_unreachable_store_is_transient_after_one_attempt(monkeypatch):
    """Nothing listens on the port: one attempt (no botocore or s3fs retries), then
    TransientReadError, never a PhotoRejected (which would quarantine the photo for good)."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    storage = storage_at(f"http://127.0.0.1:{free_port()}")
    fs = s3_filesystem(storage.s3, 2.0)
    assert fs.retries == 1
    assert fs.config_kwargs["retries"] == {"total_max_attempts": 1, "mode": "standard"}
    with pytest.raises(TransientReadError, match="s3://photos/a.jpg"):
        read_object("s3://photos/a.jpg", LIMIT, 2.0, storage)


def test_uris_that_name_no_object_are_refused_without_a_request():
    storage = storage_at(f"http://127.0.0.1:{free_port()}")  # nothing listens: a request would be transient
    for uri in ("s3://photos", "s3://photos/", "s3:///key"):
        with pytest.raises(PhotoRejected) as err:
            read_object(uri, LIMIT, 2.0, storage)
        assert err.value.reason_code == "unreadable_uri"


def test_no_credentials_is_a_configuration_error_not_a_photo_fault(monkeypatch, tmp_path):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    storage = storage_at(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(PhotoscoreError, match="no S3 credentials") as err:
        read_object("s3://photos/a.jpg", LIMIT, 2.0, storage)
    assert not isinstance(err.value, (PhotoRejected, TransientReadError))


# ---------------------------------------------------------------- the real local store

@pytest.mark.integration
def test_reads_return_the_uploaded_bytes_and_sort_failures(s3_store, tmp_path):
    photo = tmp_path / "p.jpg"
    photo.write_bytes(os.urandom(5000))
    (tmp_path / "empty.jpg").write_bytes(b"")
    uri, empty = upload(s3_store, [photo, tmp_path / "empty.jpg"], "reads/")
    storage = s3_store.config.storage
    assert read_object(uri, LIMIT, 10, storage) == photo.read_bytes()
    assert read_object(uri, 5000, 10, storage) == photo.read_bytes()  # exactly at the limit
    assert read_object(empty, LIMIT, 10, storage) == b""  # decoded later as empty_file
    expected = {uri: ("file_too_large", 4999), "s3://photos/reads/missing.jpg": ("unreadable_uri", LIMIT),
                "s3://no-such-bucket/p.jpg": ("unreadable_uri", LIMIT),
                "s3://photos/reads": ("unreadable_uri", LIMIT)}  # a prefix, not an object
    for bad, (reason, limit) in expected.items():
        with pytest.raises(PhotoRejected) as err:
            read_object(bad, limit, 10, storage)
        assert (err.value.reason_code, err.value.stage) == (reason, "read"), bad


@pytest.mark.integration
def test_denied_access_is_permanent(s3_store, tmp_path, monkeypatch):
    photo = tmp_path / "p.jpg"
    photo.write_bytes(b"x" * 100)
    (uri,) = upload(s3_store, [photo], "denied/")
    # Clients (and the credentials they resolved) are cached per process: start from a new one.
    object_store._filesystem.cache_clear()
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    try:
        with pytest.raises(PhotoRejected) as err:
            read_object(uri, LIMIT, 10, s3_store.config.storage)
    finally:
        object_store._filesystem.cache_clear()
    assert err.value.reason_code == "unreadable_uri" and "403" in str(err.value)


@pytest.mark.integration
def test_a_hung_or_killed_store_is_transient_and_a_restart_serves_the_object_again(s3_store, tmp_path):
    from jobs.s3_store import store_paths
    from jobs.supervise import read_pid

    photo = tmp_path / "p.jpg"
    photo.write_bytes(os.urandom(3000))
    (uri,) = upload(s3_store, [photo], "hung/")
    storage = s3_store.config.storage
    pid = read_pid(store_paths(s3_store.config).pid)
    os.killpg(pid, signal.SIGSTOP)  # accepts connections, never answers: the read's time limit ends it
    try:
        with pytest.raises(TransientReadError):
            read_object(uri, LIMIT, 2.0, storage)
    finally:
        os.killpg(pid, signal.SIGCONT)
    kill_store(s3_store)
    try:
        with pytest.raises(TransientReadError):
            read_object(uri, LIMIT, 2.0, storage)
    finally:
        restart_store(s3_store)
    assert read_object(uri, LIMIT, 10, storage) == photo.read_bytes()


@pytest.mark.integration
def test_upload_command_copies_and_writes_a_manifest_and_s3_prints_the_client_variables(
        s3_store, tmp_path, monkeypatch, capsys):
    from jobs.cli import main

    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    blobs = {"a.jpg": os.urandom(100), "sub/b.jpg": os.urandom(200)}
    for name, data in blobs.items():
        (src / name).write_bytes(data)
    manifest = tmp_path / "uploaded.txt"
    monkeypatch.setenv("PHOTOSCORE_HOME", str(s3_store.config.home))
    assert main(["upload", "--input", str(src), "--to", f"{s3_store.root}cli", "--no-publish",
                 "--manifest", str(manifest)]) == 0
    uris = manifest.read_text().split()
    assert uris == [f"{s3_store.root}cli/{name}" for name in sorted(blobs)]
    for uri, name in zip(uris, sorted(blobs)):
        assert read_object(uri, LIMIT, 10, s3_store.config.storage) == blobs[name]
    capsys.readouterr()
    assert main(["s3", "status"]) == 0
    exports = dict(line[len("export "):].split("=", 1) for line in capsys.readouterr().out.splitlines()
                   if line.startswith("export "))
    assert exports == s3_store.env


@pytest.mark.integration
def test_the_durable_broker_works_in_a_shell_holding_the_photo_stores_variables(s3_store, tmp_path):
    """SeaweedFS takes AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY from its environment as its identity:
    the broker's server must not inherit the photo store's (exported by `eval "$(photoscore s3 up)"`)."""
    from _stream_fixtures import running_broker
    from jobs.kafka_admin import kafka_metadata

    assert os.environ["AWS_ACCESS_KEY_ID"] == s3_store.env["AWS_ACCESS_KEY_ID"]
    config = load_settings([f"home={tmp_path / 'home'}"], env={})
    with running_broker(config, "durable") as bootstrap:
        assert config.kafka.topics.uploaded in kafka_metadata(bootstrap, timeout_s=30)
