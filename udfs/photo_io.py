"""Reading a photo's bytes from a URI: a local path or `file://` URI on the embedded default, any
fsspec-supported object-store URI (s3://, gs://, hdfs://...) where fsspec and its driver are installed.
"""
from __future__ import annotations

import os
from urllib.parse import unquote, urlparse

from udfs.decode import PhotoRejected


def local_path(uri: str) -> str | None:
    """The filesystem path of a local path or `file:` URI, else None."""
    if "://" not in uri and not uri.startswith("file:"):
        return uri
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return unquote(parsed.path)
    return None


def read_photo_bytes(uri: str, max_bytes: int) -> bytes:
    """The bytes at `uri`, or PhotoRejected(stage="read") naming the URI and the cause."""
    path = local_path(uri)
    try:
        if path is not None:
            size = os.stat(path).st_size
            if size > max_bytes:
                raise PhotoRejected("file_too_large", f"{uri}: {size} bytes > limit {max_bytes}", stage="read")
            with open(path, "rb") as fh:
                return fh.read()
        try:
            import fsspec  # optional: object stores on a cluster
        except ImportError:
            raise PhotoRejected(
                "unreadable_uri", f"{uri}: scheme needs fsspec and its driver installed", stage="read"
            ) from None
        with fsspec.open(uri, "rb") as fh:
            data = fh.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise PhotoRejected("file_too_large", f"{uri}: more than {max_bytes} bytes", stage="read")
        return data
    except PhotoRejected:
        raise
    except (OSError, ValueError) as exc:
        raise PhotoRejected("unreadable_uri", f"{uri}: {exc}", stage="read") from None
