"""The row layouts (udfs/schemas.py) and what is derived from them: pandas frames, Spark schemas,
the stream's JSON records. The batch table and the stream record carry the same fields."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from _photo_fixtures import settings_for
from jobs.spark_tables import LAYOUTS, PARTITIONS, file_layout, table_schema
from udfs.bundle import FeatureSchema
from udfs.decode import DecodeLimits
from udfs.features import FEATURE_NAMES, FEATURE_VERSION, FEATURES, extract_features, feature_frame
from udfs.messages import encode_dlq, encode_upload
from udfs.quarantine import QuarantineRecord, quarantine_frame
from udfs.schemas import QUARANTINE, QUARANTINE_TABLE, SCORE, feature_schema, frame, json_record, pandas_dtypes
from udfs.scoring import score_frame
from udfs.spark_udfs import spark_schema
from udfs.stream_scoring import SCORES, LoadedModel, process_message, upload_intake

# The columns of each table's Parquet files before the layouts were derived (the DDL strings of
# jobs/spark_tables.py then): existing tables stay readable with the same names and types.
FEATURE_FILES = ("struct<photo_id:string,content_sha256:string,feature_version:int,format:string,dhash:bigint,"
                 + ",".join(f"{n}:float" for n in FEATURE_NAMES) + ">")
FILES_BEFORE = {
    "features": FEATURE_FILES,
    "photos": "struct<photo_id:string,uri:string,content_sha256:string,file_bytes:bigint,seen_at_ms:bigint>",
    "quarantine": ("struct<source_ref:string,photo_id:string,stage:string,reason_code:string,detail:string,"
                   "seen_at_ms:bigint,content_sha256:string,feature_version:int>"),
    "scores": ("struct<photo_id:string,content_sha256:string,export_format:string,score:double,"
               "feature_version:int,scored_at_ms:bigint,source:string,from_cache:boolean,role:string>"),
}


class MeanScorer:
    """A stand-in export: the mean of a row's features (the layouts do not depend on the model)."""

    format = "native"

    def score(self, X: np.ndarray) -> np.ndarray:
        return X.astype(np.float64).mean(axis=1)


def arrow_schema(df: pd.DataFrame) -> pa.Schema:
    """The Arrow schema pyarrow writes `df` with (what `photoscore score`/`features` put on disk)."""
    return pa.Schema.from_pandas(df, preserve_index=False).remove_metadata()


def test_batch_table_and_stream_record_carry_the_same_fields(corpus_features, tmp_path):
    """One content scored by the batch path (the local score file and the Spark score table) and by
    the stream (its photos.scores record): the same field names, in the same order, with values of
    the same types, all SCORE's."""
    schema = FeatureSchema(FEATURE_VERSION, FEATURE_NAMES, ("float32",) * len(FEATURE_NAMES))
    row = corpus_features.iloc[[0]]

    batch = score_frame(row, MeanScorer(), schema, "m", 3, "f.parquet").scores
    batch.to_parquet(tmp_path / "scores.parquet", index=False)
    assert pq.read_schema(tmp_path / "scores.parquet").remove_metadata().equals(SCORE)
    # The Spark score table: files without the partition columns, readers see the whole row.
    spark_table = table_schema("scores")
    assert spark_table.fieldNames() == [*SCORE.names, "run_id"]
    assert list(spark_table)[:-1] == list(spark_schema(SCORE))
    assert file_layout("scores").names == [n for n in SCORE.names if n not in PARTITIONS["scores"]]

    model = LoadedModel("m", 3, "native", MeanScorer(), schema, tuple(range(len(FEATURE_NAMES))))
    path = Path(row["photo_id"].iloc[0])
    (kind, payload), = process_message(encode_upload(str(path), path.as_uri(), 1), "t/0/0", model, {},
                                       DecodeLimits(), upload_intake(settings_for(path.parent))).records
    record = json.loads(payload)
    assert kind == SCORES
    stream = {k: v for k, v in record.items() if k not in ("uploaded_at_ms", "upload_ref")}
    assert list(stream) == SCORE.names
    # JSON has no widths: each value is the Python type its field's Arrow type reads back from.
    assert pa.Table.from_pylist([stream], schema=SCORE).to_pylist() == [stream]
    for field in SCORE:
        assert type(stream[field.name]) is type(pa.array([stream[field.name]], field.type)[0].as_py()), field
    assert stream["score"] == batch["score"].iloc[0]
    assert {k: stream[k] for k in ("photo_id", "content_sha256", "model_name", "model_version", "feature_version")} == \
        {k: batch[k].iloc[0] for k in ("photo_id", "content_sha256", "model_name", "model_version", "feature_version")}


def test_local_files_have_the_layouts(corpus_dir, bad_inputs):
    """`photoscore features` and the quarantine files write the FEATURES and QUARANTINE layouts."""
    good = sorted(p for p in corpus_dir.rglob("*.jpg") if str(p) not in bad_inputs)[:3]
    rows = [extract_features(p.read_bytes(), str(p)) for p in good]
    bad = [extract_features(Path(p).read_bytes(), p) for p in list(bad_inputs)[:3]]
    assert all(isinstance(r, QuarantineRecord) for r in bad)
    assert arrow_schema(feature_frame(rows)).equals(FEATURES)
    assert arrow_schema(feature_frame([])).equals(FEATURES)
    assert arrow_schema(quarantine_frame(bad)).equals(QUARANTINE)
    assert arrow_schema(quarantine_frame([])).equals(QUARANTINE)


def test_quarantine_record_and_dlq_record_are_the_quarantine_layout():
    assert [f.name for f in dataclasses.fields(QuarantineRecord)] == QUARANTINE.names
    record = json.loads(encode_dlq(QuarantineRecord("t/0/1", None, "parse", "missing_field", "no uri", 5)))
    assert list(record) == QUARANTINE.names
    assert pa.Table.from_pylist([record], schema=QUARANTINE).to_pylist() == [record]
    assert QUARANTINE_TABLE.names[:len(QUARANTINE)] == QUARANTINE.names


@pytest.mark.parametrize("table", sorted(FILES_BEFORE))
def test_table_files_keep_their_columns_and_types(table):
    assert spark_schema(file_layout(table)).simpleString() == FILES_BEFORE[table]
    assert table_schema(table).fieldNames() == [*LAYOUTS[table].names, "run_id"]


def test_feature_layout_is_the_keys_then_one_float32_per_feature():
    assert FEATURES.equals(feature_schema(FEATURE_NAMES))
    assert FEATURES.names[5:] == list(FEATURE_NAMES)
    assert {FEATURES.field(n).type for n in FEATURE_NAMES} == {pa.float32()}


def test_frame_gives_columns_order_and_dtypes_and_refuses_a_missing_column():
    empty = frame(SCORE)
    assert list(empty.columns) == SCORE.names and empty.empty
    assert empty.dtypes.to_dict() == pandas_dtypes(SCORE)
    assert pandas_dtypes(SCORE)["feature_version"] == np.int32 and pandas_dtypes(SCORE)["photo_id"] == "string"
    with pytest.raises(ValueError, match="columns .*'model_name'.* are missing"):
        frame(SCORE, {"photo_id": ["p"]})
    photos = frame(LAYOUTS["photos"], [["p", "u", None, None, 1]], nullable=["file_bytes"])
    assert str(photos["file_bytes"].dtype) == "Int64" and photos["file_bytes"].isna().all()


def test_json_record_converts_numpy_values_and_refuses_a_missing_field():
    row = {"photo_id": np.str_("p"), "content_sha256": "c", "model_name": "m", "model_version": np.int64(2),
           "export_format": "onnx", "score": np.float32(0.5), "feature_version": np.int32(1),
           "scored_at_ms": np.int64(7), "source": "batch", "from_cache": np.bool_(False),
           "role": np.str_("served")}
    out = json_record(SCORE, row)
    assert json.loads(json.dumps(out)) == out
    assert [type(v) for v in out.values()] == [str, str, str, int, str, float, int, int, str, bool, str]
    assert json_record(QUARANTINE, {**dict.fromkeys(QUARANTINE.names, "x"), "photo_id": None,
                                    "seen_at_ms": 1})["photo_id"] is None
    with pytest.raises(ValueError, match="lacks"):
        json_record(SCORE, {k: v for k, v in row.items() if k != "source"})


def test_a_new_field_is_one_line_and_reaches_every_derivation():
    """A field added to score rows (as `role` was, for rollouts) is one field in the layout, and
    pandas, Spark and JSON all carry it (producers that do not set it fail loudly)."""
    with_arm = pa.schema([*SCORE, ("arm", pa.string())])
    row = {**dict.fromkeys(SCORE.names, 1), "arm": "canary"}
    assert list(frame(with_arm, {k: [v] for k, v in row.items()}).columns)[-1] == "arm"
    assert spark_schema(with_arm).fieldNames()[-1] == "arm"
    assert json_record(with_arm, row)["arm"] == "canary"
    with pytest.raises(ValueError, match="arm"):
        json_record(with_arm, dict.fromkeys(SCORE.names, 1))
