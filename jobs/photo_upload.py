"""Copying photo files into an object store, as an uploading service would before it announces
them on photos.uploaded: `photoscore upload --to s3://bucket/prefix/` (then jobs.topic_io publishes
the `s3://` URIs), the stream demo and the tests."""
from __future__ import annotations

from pathlib import Path

from jobs.progress import Progress
from udfs.errors import PhotoscoreError
from udfs.object_store import is_s3_uri, upload_file
from udfs.settings import StorageSettings


def object_uris(files: list[str], inputs: list[str], to: str) -> list[str]:
    """Where each of `files` goes under the prefix `to` (s3://bucket/prefix/): its path relative to
    the input folder it was found in, or its name for a file given directly. Two files landing on
    one key is refused (the second would silently replace the first)."""
    if not is_s3_uri(to) or len(to.split("://", 1)[1].strip("/")) == 0:
        raise PhotoscoreError(f"--to {to!r}: expected s3://BUCKET/ or s3://BUCKET/PREFIX/")
    prefix = to if to.endswith("/") else to + "/"
    # The deepest folder first, so a folder inside another input folder keeps its own layout.
    roots = sorted((Path(i).expanduser().absolute() for i in inputs if Path(i).expanduser().is_dir()),
                   key=lambda p: len(p.parts), reverse=True)
    uris = []
    for name in files:
        path = Path(name)
        root = next((r for r in roots if path.is_relative_to(r)), None)
        uris.append(prefix + (path.relative_to(root).as_posix() if root else path.name))
    seen: dict[str, str] = {}
    for name, uri in zip(files, uris):
        if uri in seen:
            raise PhotoscoreError(f"{seen[uri]} and {name} would both be uploaded to {uri}")
        seen[uri] = name
    return uris


def copy_to_store(files: list[str], uris: list[str], storage: StorageSettings) -> None:
    """Copy each file to its URI, in order, with progress (a bar on a terminal, rate/ETA log lines
    otherwise); the first failure stops the copy with the file and the cause."""
    with Progress(len(files), "photos", "upload") as progress:
        for name, uri in zip(files, uris):
            try:
                upload_file(name, uri, storage)
            except (OSError, ValueError) as exc:
                raise PhotoscoreError(f"copying {name} to {uri} failed after {progress.done} files: {exc}") from exc
            progress.update()
