"""Reading the Parquet tables without Spark (pyarrow datasets over fsspec), for the commands that
read a window of them on one machine: `photoscore compare --tables` and `photoscore monitor`.

The tables' writers (jobs/spark_tables.py) move a run's files into place only when it commits, so
every Parquet file under a table is committed data.
"""
from __future__ import annotations

import re
from datetime import datetime, timezone

import pandas as pd

from udfs.errors import PhotoscoreError

_AGO = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")
_UNIT_MS = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def parse_since(text: str, now_ms: int) -> int:
    """`--since` as epoch ms: an ISO time (UTC when it names no zone) or a span ago ("30m", "2h",
    "1d", "90s")."""
    ago = _AGO.match(text)
    if ago:
        return now_ms - int(float(ago.group(1)) * _UNIT_MS[ago.group(2)])
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise PhotoscoreError(f"--since {text!r} is neither an ISO time (2026-12-01T10:00) nor a span "
                              "ago (30m, 2h, 1d)") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return int(when.timestamp() * 1000)



def table_filesystem(settings, root: str):
    """(filesystem, path) of a table ROOT: s3fs configured from `storage.s3` for s3://, else fsspec's."""
    import fsspec

    from udfs.object_store import is_s3_uri, s3_filesystem

    if is_s3_uri(root):
        return s3_filesystem(settings.storage.s3, settings.storage.read_timeout_s), root.split("://", 1)[1].rstrip("/")
    fs, path = fsspec.core.url_to_fs(root)
    return fs, path.rstrip("/")


def read_dataset(fs, path: str, schema, columns: list[str], where=None) -> pd.DataFrame:
    """Rows of the Parquet files under `path` (hive-partitioned by run_id); none when it is absent.
    `schema` reads files written before a column existed with that column null (SCORE's `role`)."""
    import pyarrow.dataset as ds

    if not fs.exists(path):
        return pd.DataFrame({c: pd.Series(dtype=schema.field(c).type.to_pandas_dtype()) for c in columns})
    dataset = ds.dataset(path, filesystem=fs, format="parquet", schema=schema, partitioning="hive",
                         exclude_invalid_files=False)
    return dataset.to_table(columns=columns, filter=where).to_pandas()
