"""A fake object store for the transient-read tests: files under a folder, down or flaky on
demand. Imported by the unit tests' fixture (tests/_photo_fixtures.py) and by the engines' workers
(tests/store_faults/sitecustomize.py), which have no pytest: this module needs only udfs."""
from __future__ import annotations

from pathlib import Path

from udfs.decode import PhotoRejected
from udfs.errors import TransientReadError

# The variable naming the folder of a worker's fake store (tests/store_faults/sitecustomize.py).
STORE_ENV = "FAKE_S3_DIR"


class FakeStore:
    """`s3://BUCKET/KEY` is the file ROOT/BUCKET/KEY. With ROOT/BUCKET/.down every read is a
    TransientReadError; with ROOT/BUCKET/.flaky holding N, the first N reads of each object since
    `set_flaky` are.
    A missing object is `unreadable_uri`, a larger one `file_too_large` (udfs.object_store's
    contract). Attempts are counted in files, so across worker processes too."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def put(self, uri: str, data: bytes) -> str:
        path = self._path(uri)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return uri

    def set_down(self, bucket: str, down: bool = True) -> None:
        flag = self.root / bucket / ".down"
        flag.parent.mkdir(parents=True, exist_ok=True)
        flag.touch() if down else flag.unlink(missing_ok=True)

    def set_flaky(self, bucket: str, failures: int) -> None:
        """From now on, the first `failures` reads of each object of `bucket` fail (counts restart)."""
        (self.root / bucket).mkdir(parents=True, exist_ok=True)
        (self.root / bucket / ".flaky").write_text(str(failures))
        for counter in (self.root / ".attempts").glob(f"{bucket}%*"):
            counter.unlink()

    def attempts(self, uri: str) -> int:
        counter = self._counter(uri)
        return counter.stat().st_size if counter.exists() else 0

    def read(self, uri: str, max_bytes: int, timeout_s: float, storage) -> bytes:
        counter = self._counter(uri)
        counter.parent.mkdir(parents=True, exist_ok=True)
        with open(counter, "ab") as fh:  # one byte an attempt: O_APPEND writes do not interleave
            fh.write(b".")
        attempt = counter.stat().st_size
        bucket = self.root / uri.split("/")[2]
        flaky = bucket / ".flaky"
        if (bucket / ".down").exists() or (flaky.exists() and attempt <= int(flaky.read_text())):
            raise TransientReadError(f"{uri}: the fake store is unreachable (attempt {attempt})")
        path = self._path(uri)
        if not path.is_file():
            raise PhotoRejected("unreadable_uri", f"{uri}: no such object", stage="read")
        data = path.read_bytes()
        if len(data) > max_bytes:
            raise PhotoRejected("file_too_large", f"{uri}: more than {max_bytes} bytes", stage="read")
        return data

    def _path(self, uri: str) -> Path:
        return self.root / uri.removeprefix("s3://")

    def _counter(self, uri: str) -> Path:
        return self.root / ".attempts" / uri.removeprefix("s3://").replace("/", "%")
