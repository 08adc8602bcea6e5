"""Reading a photo's bytes, confined and bounded (README "Trust model").

A photo is read only from under the photo roots (`storage.photo_roots`: local directories and
`s3://bucket/prefix/` prefixes, plus what an operator names on a local command's `--input`); anything
else is refused before a byte is read (`uri_not_allowed`). Local paths are resolved (symlinks, `..`)
before the check and only regular files are opened (`not_a_regular_file`), without blocking on a FIFO.
Every read stops at a byte limit while reading (never trusting `stat`: /dev/zero and /proc say 0
bytes) and at a time limit (`storage.read_timeout_s`).

Failures are of two kinds. Permanent ones (missing, denied, not allowed, too large) raise
`PhotoRejected(stage="read")`: the photo is quarantined. Transient ones (the store unreachable, a
timeout) raise `TransientReadError` after `storage.read_attempts` attempts with exponential backoff:
the Spark task fails, the stream restarts from its checkpoint; the photo is never quarantined for it.
"""
from __future__ import annotations

import errno
import logging
import os
import stat
import time
from dataclasses import dataclass
from typing import Iterable
from urllib.parse import unquote, urlsplit

from tenacity import Retrying, before_sleep_log, retry_if_exception_type, stop_after_attempt, wait_exponential

from udfs.decode import PhotoRejected
from udfs.errors import PhotoscoreError, TransientReadError
from udfs.settings import S3_BUCKET, Settings, StorageSettings, photo_root

log = logging.getLogger(__name__)

# OS errors a retry can cure: the filesystem (NFS and other network mounts) or this process is
# short of something right now. Everything else (ENOENT, EACCES, EISDIR, ELOOP, EIO: a media error
# of that file, retried it would fail every run) is permanent.
TRANSIENT_ERRNOS = frozenset({
    errno.ETIMEDOUT, errno.ESTALE, errno.EAGAIN, errno.EINTR, errno.EMFILE, errno.ENFILE, errno.ENOMEM,
    errno.ENOBUFS, errno.ENETDOWN, errno.ENETUNREACH, errno.EHOSTDOWN, errno.EHOSTUNREACH,
    errno.ECONNRESET, errno.ECONNREFUSED, errno.ECONNABORTED,
})
# Local reads go in chunks so the time limit is checked while reading.
CHUNK_BYTES = 4 * 1024 * 1024
_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC


def _refused(uri: str, why: str) -> PhotoRejected:
    return PhotoRejected("uri_not_allowed", f"{uri}: {why}", stage="read")


def local_path(uri: str) -> str | None:
    """The filesystem path of a local path or `file:` URI, else None."""
    if "://" not in uri and not uri.startswith("file:"):
        return uri
    parsed = urlsplit(uri)
    if parsed.scheme.lower() == "file":
        return unquote(parsed.path)
    return None


def canonical_s3(uri: str) -> str:
    """`s3://bucket/key` with nothing a store could read differently from how the roots are
    matched: no `.`/`..`/empty key segments, no query or fragment (s3fs reads `?versionId=`)."""
    parts = urlsplit(uri)
    if not S3_BUCKET.fullmatch(parts.netloc):
        raise _refused(uri, "not an s3://bucket/key URI")
    if parts.query or parts.fragment or "?" in uri or "#" in uri:
        raise _refused(uri, "a query or fragment is not allowed in a photo URI")
    segments = parts.path.split("/")[1:]
    if not segments or any(s in ("", ".", "..") for s in segments):
        raise _refused(uri, "empty, '.' or '..' key segments are not allowed")
    return f"s3://{parts.netloc}/{'/'.join(segments)}"


def _within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def read_remote(uri: str, max_bytes: int, timeout_s: float, storage: StorageSettings) -> bytes:
    """One attempt at reading an object-store URI (udfs.object_store, on s3fs), imported on first
    use so local-only workers never load the S3 client."""
    from udfs.object_store import read_object

    return read_object(uri, max_bytes, timeout_s, storage)


@dataclass(frozen=True)
class PhotoReader:
    """Reads photos from under its roots only; picklable, so Spark tasks and Flink workers get the
    driver's resolved roots. Build it with `photo_reader(settings, inputs)`."""

    local_roots: tuple[str, ...]   # absolute paths (resolved again at each read: they may be links)
    s3_roots: tuple[str, ...]      # canonical s3://bucket/prefix/
    storage: StorageSettings       # time limit, retries, the object store's settings

    def read(self, uri: str, max_bytes: int) -> bytes:
        """The bytes at `uri` (at most `max_bytes`): PhotoRejected(stage="read") when the photo can
        never be read, TransientReadError when it could not be read now, after the retries."""
        retrying = Retrying(
            retry=retry_if_exception_type(TransientReadError), reraise=True,
            stop=stop_after_attempt(self.storage.read_attempts),
            wait=wait_exponential(multiplier=self.storage.read_backoff_s, max=self.storage.read_backoff_max_s),
            before_sleep=before_sleep_log(log, logging.WARNING))
        return retrying(self._read_once, uri, max_bytes)

    def _read_once(self, uri: str, max_bytes: int) -> bytes:
        parts, path = urlsplit(uri), local_path(uri)
        if path is not None:
            if parts.scheme.lower() == "file" and (parts.netloc not in ("", "localhost") or parts.query
                                                   or parts.fragment):
                raise _refused(uri, "a file: URI names a local path: no host, query or fragment")
            return self._read_local(uri, path, max_bytes)
        if parts.scheme.lower() != "s3":
            raise _refused(uri, f"photos are read from local paths and s3:// only, not {parts.scheme}://")
        canonical = canonical_s3(uri)
        if not any(canonical.startswith(root) for root in self.s3_roots):
            raise _refused(uri, "outside the photo roots (storage.photo_roots)")
        return read_remote(canonical, max_bytes, self.storage.read_timeout_s, self.storage)

    def _allowed(self, path: str) -> bool:
        return any(_within(path, os.path.realpath(root)) for root in self.local_roots)

    def _read_local(self, uri: str, path: str, max_bytes: int) -> bytes:
        try:
            real = os.path.realpath(path)
        except ValueError as exc:  # a NUL byte in the path
            raise _refused(uri, str(exc)) from None
        if not self._allowed(real):
            raise _refused(uri, "outside the photo roots (storage.photo_roots), symlinks and '..' resolved")
        try:
            if not stat.S_ISREG(os.stat(real).st_mode):
                raise _not_regular(uri)
            # O_NONBLOCK: a FIFO put in place since the stat cannot block the open;
            # O_NOFOLLOW: nor can a symlink swapped in for the file.
            fd = os.open(real, _OPEN_FLAGS)
        except OSError as exc:
            raise _os_error(uri, exc) from None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise _not_regular(uri)
            opened = f"/proc/self/fd/{fd}"
            # A directory of the path swapped for a symlink between the check and the open: the
            # file actually opened is checked again (Linux names it under /proc).
            if os.path.islink(opened) and not self._allowed(os.readlink(opened)):
                raise _refused(uri, "outside the photo roots (storage.photo_roots) when opened")
            return _read_bounded(uri, fd, max_bytes, self.storage.read_timeout_s)
        except OSError as exc:
            raise _os_error(uri, exc) from None
        finally:
            os.close(fd)


def _not_regular(uri: str) -> PhotoRejected:
    return PhotoRejected("not_a_regular_file", f"{uri}: a directory, device, FIFO or socket", stage="read")


def _os_error(uri: str, exc: OSError) -> Exception:
    if exc.errno in TRANSIENT_ERRNOS:
        return TransientReadError(f"{uri}: {exc.strerror or exc}")
    return PhotoRejected("unreadable_uri", f"{uri}: {exc.strerror or exc}", stage="read")


def _read_bounded(uri: str, fd: int, max_bytes: int, timeout_s: float) -> bytes:
    """At most `max_bytes` from `fd`, counted while reading; past `timeout_s` the read is transient
    (a hung network mount), past `max_bytes` it is `file_too_large`."""
    deadline = time.monotonic() + timeout_s
    chunks, total = [], 0
    while True:
        chunk = os.read(fd, min(CHUNK_BYTES, max_bytes + 1 - total))
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        total += len(chunk)
        if total > max_bytes:
            raise PhotoRejected("file_too_large", f"{uri}: more than {max_bytes} bytes", stage="read")
        if time.monotonic() > deadline:
            raise TransientReadError(f"{uri}: read not done after {timeout_s} s")


def photo_reader(settings: Settings, inputs: Iterable[str] = ()) -> PhotoReader:
    """The reader of `storage.photo_roots` (relative ones against `home`), widened by `inputs`: the
    files and folders an operator names on a local command (`--input`), the operator's own choice
    for that run. Messages and manifest entries are never inputs: they can only name photos under
    the roots. A symlink inside an input that leads out of it (and out of the roots) is refused."""
    local, remote = [], []
    for location in [*(settings.resolve(r) for r in settings.storage.photo_roots), *inputs]:
        try:
            root = photo_root(location)
        except ValueError as exc:
            raise PhotoscoreError(f"photo root {exc}") from None
        if root.startswith("s3://"):
            remote.append(root)
        else:
            local.append(os.path.abspath(local_path(root)))
    return PhotoReader(tuple(local), tuple(remote), settings.storage)
