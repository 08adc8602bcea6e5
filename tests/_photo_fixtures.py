"""Photo-reading test machinery: settings and readers confined to given roots, the fake object
store (tests/_fake_store.py) in place of the real one in this process (`fake_store`), and an
interpreter for the stream job's workers that runs the code under test, with the fake store if
asked. Registered once, by `pytest_plugins` in tests/conftest.py; test modules import only the
helpers."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from _fake_store import STORE_ENV, FakeStore
from jobs.config import load_settings


def settings_for(*roots, overrides: tuple[str, ...] = (), **storage):
    """The default settings with `storage.photo_roots` = `roots` and other `storage` keys set."""
    return load_settings([f"storage.photo_roots={json.dumps([str(r) for r in roots])}",
                          *(f"storage.{key}={value}" for key, value in storage.items()), *overrides], env={})


def reader_for(*roots, **storage):
    """A PhotoReader of `roots` (local folders, s3:// prefixes), with `storage` keys set."""
    from udfs.photo_io import photo_reader

    return photo_reader(settings_for(*roots, **storage))


def worker_python(folder: Path, store: FakeStore | None = None) -> Path:
    """An interpreter for the Flink job and its Python workers (`flink.python`) running the code
    under test (this checkout first on PYTHONPATH, not the Flink environment's installed copy)
    and, with `store`, the fake object store in place of the real one. A script named `python`,
    alone in `folder`: the supervisor puts its folder first on the job's PATH."""
    from jobs.stream_supervisor import REPO

    # The Flink environment next to this checkout's, else next to the test run's own environment
    # (a git worktree has no environments of its own).
    flink_env = next(p for p in (REPO / ".venv-flink", Path(sys.prefix).parent / ".venv-flink") if p.is_dir())
    tests = Path(__file__).resolve().parent
    paths = ([str(tests / "store_faults")] if store else []) + [str(tests), str(REPO)]
    env = f"export {STORE_ENV}='{store.root}'\n" if store else ""
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "python"
    script.write_text("#!/bin/sh\n" + env + f"export PYTHONPATH='{os.pathsep.join(paths)}'${{PYTHONPATH:+:$PYTHONPATH}}\n"
                      f"exec '{flink_env / 'bin' / 'python'}' \"$@\"\n")
    script.chmod(0o755)
    return script


@pytest.fixture
def fake_store(tmp_path, monkeypatch) -> FakeStore:
    """A FakeStore under tmp_path in place of the real object store, in this process."""
    import udfs.photo_io

    store = FakeStore(tmp_path / "fake-s3")
    monkeypatch.setattr(udfs.photo_io, "read_remote", store.read)
    return store
