"""Photos in S3 (or any S3-compatible store): one bounded read, and the upload writer, via s3fs.

`read_object(uri, max_bytes, timeout_s, storage)` makes ONE attempt and sorts its failures for the
caller (`udfs.photo_io`, which owns the retry policy):
- permanent, the photo's own fault: `PhotoRejected(stage="read")` - `unreadable_uri` for a missing
  object or bucket, denied access, a prefix that is not an object; `file_too_large` over `max_bytes`;
- transient, the store's fault right now: `TransientReadError` - unreachable, timed out (the whole
  read, not each socket operation, is bounded by `timeout_s`), 5xx or throttled;
- no credentials at all: a PhotoscoreError naming the variables to set (every read would fail the
  same way: a configuration fault, never a photo's).

Endpoint and region come from `storage.s3` (the config loader fills them from AWS_ENDPOINT_URL /
AWS_DEFAULT_REGION); credentials only from botocore's own chain (AWS_ACCESS_KEY_ID /
AWS_SECRET_ACCESS_KEY, a profile, an instance role), never from config.
"""
from __future__ import annotations

import functools
import os
from pathlib import Path

from udfs.decode import PhotoRejected
from udfs.errors import PhotoscoreError, TransientReadError
from udfs.settings import S3Settings, StorageSettings

SCHEMES = ("s3://",)


def is_s3_uri(uri: str) -> bool:
    """True for an `s3://` URI."""
    return uri.lower().startswith(SCHEMES)


def s3_filesystem(s3: S3Settings, timeout_s: float, key: str | None = None, secret: str | None = None):
    """An s3fs filesystem for these settings whose every request is ONE attempt bounded by
    `timeout_s` (the caller retries with backoff: two retry layers would multiply the time a dead
    store holds a read). `key`/`secret` only for the local store's own admin (bucket creation);
    otherwise botocore's credential chain. Cached per process: a forked worker (Spark's) must not
    use its parent's event loop thread, which does not exist in the child."""
    return _filesystem(os.getpid(), s3, float(timeout_s), key, secret)


@functools.lru_cache(maxsize=8)
def _filesystem(pid: int, s3: S3Settings, timeout_s: float, key: str | None, secret: str | None):
    import s3fs

    client_kwargs = {"region_name": s3.region} if s3.region else {}
    fs = s3fs.S3FileSystem(
        endpoint_url=s3.endpoint_url or None, key=key, secret=secret, client_kwargs=client_kwargs,
        # botocore's own retries off (total_max_attempts counts the first one), its socket timeouts
        # at the read's limit.
        config_kwargs={"connect_timeout": timeout_s, "read_timeout": timeout_s,
                       "retries": {"total_max_attempts": 1, "mode": "standard"}},
        skip_instance_cache=True)
    fs.retries = 1  # s3fs' own retry loop (default 5 attempts with backoff) off too
    return fs


def read_object(uri: str, max_bytes: int, timeout_s: float, storage: StorageSettings) -> bytes:
    """The bytes of the object at `uri` (s3://bucket/key), at most `max_bytes` of them; one attempt
    of at most `timeout_s` seconds. Raises as the module docstring says."""
    from fsspec.asyn import sync

    fs = s3_filesystem(storage.s3, timeout_s)
    try:
        return sync(fs.loop, _read, fs, uri, max_bytes, timeout=timeout_s)
    except (PhotoRejected, PhotoscoreError):
        raise
    except Exception as exc:  # noqa: BLE001 - s3fs, botocore and aiohttp raise many types: sorted here
        classified = _classified(uri, exc)
        if classified is None:
            raise  # not a store's answer nor the way there failing: a bug, shown as it is
        raise classified from exc


async def _read(fs, uri: str, max_bytes: int) -> bytes:
    bucket, key, _ = fs.split_path(uri)
    if not bucket or not key:
        raise PhotoRejected("unreadable_uri", f"{uri}: not an object URI (s3://bucket/key)", stage="read")
    # HEAD first: a missing object is a clean 404, an empty one needs no ranged GET (which S3
    # refuses on 0 bytes), and an object over the limit is refused before any byte moves.
    info = await fs._info(uri)
    if info.get("type") != "file":
        raise PhotoRejected("unreadable_uri", f"{uri}: a prefix, not an object", stage="read")
    size = int(info.get("size") or 0)
    if size > max_bytes:
        raise PhotoRejected("file_too_large", f"{uri}: {size} bytes > limit {max_bytes}", stage="read")
    if size == 0:
        return b""
    # The range bounds the transfer whatever the object became since the HEAD.
    data = await fs._cat_file(uri, start=0, end=max_bytes + 1)
    if len(data) > max_bytes:
        raise PhotoRejected("file_too_large", f"{uri}: more than {max_bytes} bytes", stage="read")
    return data


def _classified(uri: str, exc: Exception) -> Exception | None:
    """The contract's exception for a failed read (see the module docstring); None for anything
    else."""
    from botocore.exceptions import ClientError, NoCredentialsError
    from botocore.exceptions import ConnectionError as BotoConnectionError
    from s3fs.core import S3_RETRYABLE_ERRORS

    cause = exc.__cause__ if isinstance(exc.__cause__, ClientError) else exc
    if isinstance(exc, NoCredentialsError) or isinstance(cause, NoCredentialsError):
        return PhotoscoreError(f"{uri}: no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                               "(or an AWS profile / instance role) where the job runs")
    if isinstance(cause, ClientError):
        status = cause.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        code = cause.response.get("Error", {}).get("Code", "")
        if status >= 500 or status == 429 or code in ("SlowDown", "Throttling", "RequestTimeout"):
            return TransientReadError(f"{uri}: the store answered {status} {code}")
        return PhotoRejected("unreadable_uri", f"{uri}: the store answered {status} {code}", stage="read")
    if isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError, ValueError)):
        return PhotoRejected("unreadable_uri", f"{uri}: {type(exc).__name__}: {exc}", stage="read")
    # The way there failing: connection refused or reset (OSError without a store's answer), a
    # timeout (the whole read's or one socket's), a response cut short - what s3fs itself retries.
    if isinstance(exc, (OSError, TimeoutError, BotoConnectionError, *S3_RETRYABLE_ERRORS)):
        return TransientReadError(f"{uri}: {type(exc).__name__}: {exc}")
    return None


def upload_file(path: Path | str, uri: str, storage: StorageSettings, timeout_s: float = 300.0) -> None:
    """Copy a local file to `uri` (multipart for large files, s3fs' own). Failures raise as they
    are: an upload is an operator's command, and it stops on the first one."""
    s3_filesystem(storage.s3, timeout_s).put_file(str(path), uri)
