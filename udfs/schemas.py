"""The layout of every row the project writes, each defined once (DESIGN.md "Messages and rows").

A layout is a pyarrow schema: field names, their order and their Arrow types. Everything else is
derived from it, so batch and stream cannot drift apart:

- pandas frames of the local commands and the Spark UDFs: `frame` (dtypes: `pandas_dtypes`);
- Spark schemas of the tables and the UDFs' return types: `udfs.spark_udfs.spark_schema` (pyspark's own mapping);
- JSON records of the stream's topics: `json_record` (udfs/messages.py).

Adding a field to a row is one line here; every producer then fails loudly until it sets the field
(a missing column or key is an error in `frame`, `json_record` and jobs.spark_tables.conform).
Ground layer: pyarrow and pandas only (pyarrow 16 in .venv-flink, >= 18 in .venv), no I/O.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

import pandas as pd
import pyarrow as pa

# One score of one content by one model version in one export format: the score table's row
# (partitioned by model_name / model_version), the local `photoscore score` file, photos.scores
# (role served) and photos.scores.shadow (role shadow). `role` says what the score is for
# (udfs/rollout.py): `served` is what consumers read; `shadow` is a rollout's other model on the
# same content, kept for comparison and never served.
SCORE = pa.schema([
    ("photo_id", pa.string()),
    ("content_sha256", pa.string()),
    ("model_name", pa.string()),
    ("model_version", pa.int64()),
    ("export_format", pa.string()),
    ("score", pa.float64()),
    ("feature_version", pa.int32()),
    ("scored_at_ms", pa.int64()),
    ("source", pa.string()),          # "batch" | "stream"
    ("from_cache", pa.bool_()),
    # Last, so files written before it keep their layout and read it as null: they were all served.
    ("role", pa.string()),            # "served" | "shadow"
])

# One input that could not be processed (udfs.quarantine.QuarantineRecord): photos.dlq and the
# quarantine files of the local commands.
QUARANTINE = pa.schema([
    ("source_ref", pa.string()),      # path or URI, topic/partition/offset, or models:/M/V#content
    ("photo_id", pa.string()),
    ("stage", pa.string()),           # udfs.quarantine.STAGES
    ("reason_code", pa.string()),     # udfs.quarantine.REASON_CODES
    ("detail", pa.string()),
    ("seen_at_ms", pa.int64()),
])

# The Spark quarantine table also names the content and feature version a failure belongs to, so
# a rerun skips contents whose decode or scoring already failed.
QUARANTINE_TABLE = pa.schema([
    *QUARANTINE,
    ("content_sha256", pa.string()),
    ("feature_version", pa.int32()),
])

# A feature row's identity; one float32 column per feature name follows (`feature_schema`;
# udfs.features.FEATURE_SETS holds each feature version's row, `feature_table_schema` the table's).
FEATURE_KEYS = pa.schema([
    ("photo_id", pa.string()),
    ("content_sha256", pa.string()),
    ("feature_version", pa.int32()),
    ("format", pa.string()),          # the decoder's image format, e.g. "JPEG"
    ("dhash", pa.int64()),            # signed: Parquet has no uint64
])

# The Spark photos table: which content each photo id had when it was read.
PHOTOS = pa.schema([
    ("photo_id", pa.string()),
    ("uri", pa.string()),
    ("content_sha256", pa.string()),
    ("file_bytes", pa.int64()),
    ("seen_at_ms", pa.int64()),
])


def feature_schema(names: Iterable[str]) -> pa.Schema:
    """The feature row of a feature version: FEATURE_KEYS, then one float32 column per name."""
    return pa.schema([*FEATURE_KEYS, *[(name, pa.float32()) for name in names]])


def feature_table_schema(names_by_version: Iterable[Sequence[str]]) -> pa.Schema:
    """The features table's row, one layout for every feature version: FEATURE_KEYS, then the
    ordered union of the versions' feature names (first appearance wins the position).

    A row fills its own version's columns and leaves the others null, so the versions live side
    by side keyed by (content_sha256, feature_version); a version that adds columns only appends
    to the layout, and files written before it read those columns as nulls.
    """
    union: dict[str, None] = {}
    for names in names_by_version:
        union.update(dict.fromkeys(names))
    return feature_schema(union)


def pick(schema: pa.Schema, *names: str) -> list[pa.Field]:
    """The fields `names` of `schema`, in that order (to compose a layout from others)."""
    return [schema.field(name) for name in names]


def without(schema: pa.Schema, names: Iterable[str]) -> pa.Schema:
    """`schema` minus the fields `names` (e.g. a table's partition columns)."""
    drop = set(names)
    return pa.schema([f for f in schema if f.name not in drop])


def pandas_dtypes(schema: pa.Schema, nullable: Iterable[str] = ()) -> dict[str, Any]:
    """The pandas dtype of each column: pandas' `string` for text, numpy's for numbers and booleans
    (what pyarrow writes back as the same Arrow types); integer columns in `nullable` get pandas'
    nullable integers (`Int64`), for frames whose failed rows leave them empty."""
    allow_null = set(nullable)
    dtypes: dict[str, Any] = {}
    for f in schema:
        if pa.types.is_string(f.type):
            dtypes[f.name] = "string"
        elif f.name in allow_null and pa.types.is_integer(f.type):
            dtypes[f.name] = f"Int{f.type.bit_width}"
        else:
            dtypes[f.name] = f.type.to_pandas_dtype()
    return dtypes


def frame(schema: pa.Schema, data: Mapping[str, Any] | Sequence = (), nullable: Iterable[str] = ()) -> pd.DataFrame:
    """`data` as a DataFrame of `schema`: its columns, in its order, with its dtypes.

    `data` is {column: values or a scalar} (every column required) or a sequence of rows (lists in
    the schema's order, or dicts); no data gives an empty frame that keeps the columns and dtypes.
    """
    if isinstance(data, Mapping):
        missing = [n for n in schema.names if n not in data]
        if missing:
            raise ValueError(f"columns {missing} are missing (layout: {', '.join(schema.names)})")
    return pd.DataFrame(data, columns=schema.names).astype(pandas_dtypes(schema, nullable))


def json_record(schema: pa.Schema, row: Mapping[str, Any]) -> dict[str, Any]:
    """`row`'s fields of `schema`, in its order, as JSON-ready Python values (numpy scalars become
    int, float, bool or str as the field's type says; None stays null). Raises ValueError when
    `row` lacks a field."""
    missing = [n for n in schema.names if n not in row]
    if missing:
        raise ValueError(f"record lacks {missing} (layout: {', '.join(schema.names)})")
    return {f.name: _json_value(f.type, row[f.name]) for f in schema}


def _json_value(arrow_type: pa.DataType, value: Any) -> Any:
    if value is None:
        return None
    if pa.types.is_boolean(arrow_type):
        return bool(value)
    if pa.types.is_integer(arrow_type):
        return int(value)
    if pa.types.is_floating(arrow_type):
        return float(value)
    return str(value)
