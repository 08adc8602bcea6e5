"""Fault injection for the engines' transient-read tests, loaded by Spark's and Flink's Python
workers (their PYTHONPATH starts with this folder, then tests/, then the checkout): the object
store becomes the FakeStore in $FAKE_S3_DIR (tests/_photo_fixtures.py), which the test sets down
or flaky."""
from __future__ import annotations

import os

if os.environ.get("FAKE_S3_DIR"):
    import udfs.photo_io
    from _fake_store import FakeStore

    udfs.photo_io.read_remote = FakeStore(os.environ["FAKE_S3_DIR"]).read
