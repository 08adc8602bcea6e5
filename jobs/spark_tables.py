"""The Parquet tables of the backfills and how a run commits to them, through Hadoop's FileSystem
API (the same code on a local path, HDFS or an object store).

Layout under ROOT (a path or URI from `storage.tables`):

    features/run_id=R/part-*.parquet                     one row per (content_sha256, feature_version);
                                                         every version's columns, a row fills its own
    photos/run_id=R/part-*.parquet                       photo_id -> content_sha256 (+ uri, file_bytes)
    quarantine/run_id=R/part-*.parquet                   quarantine rows (+ content_sha256, feature_version)
    scores/model_name=M/model_version=V/run_id=R/...     one row per (content_sha256, M, V)
    _staging/R/...                                       a run's output before it commits
    _staging/R/_COMMIT                                   the commit point (JSON: moves, replaces)
    _runs/R.json                                         the run's report: counts, reasons, rows written

Each table's columns are a row layout of udfs/schemas.py (`LAYOUTS`); the Spark schemas are derived.

A run writes everything under `_staging/R/` (names starting with `_` are invisible to Spark
readers), then writes `_COMMIT` (one small file: the commit point), then renames each staged
directory into its table (one directory rename each: readers see all of a table's new files or
none). A crash before `_COMMIT` leaves only staging, deleted by the next run; a crash after it is
rolled forward by the next run (`recover`). So a `kill -9` at any moment leaves no partial file
visible and the rerun ends with exactly one row per identity.
"""
from __future__ import annotations

import argparse
import json
import logging
import re
import time
import uuid
from dataclasses import dataclass, field

from udfs.schemas import PHOTOS, QUARANTINE_TABLE, SCORE, without
from udfs.spark_udfs import FEATURE_TABLE, spark_schema

log = logging.getLogger("photoscore.tables")

# Each table's row layout (udfs/schemas.py), and the layout's columns that live in the directory
# names (partitions) rather than in the files; every table is also partitioned by `run_id`, last.
LAYOUTS = {"features": FEATURE_TABLE, "photos": PHOTOS, "quarantine": QUARANTINE_TABLE, "scores": SCORE}
PARTITIONS = {"scores": ("model_name", "model_version")}
TABLES = tuple(LAYOUTS)
STAGING = "_staging"
RUNS = "_runs"
COMMIT_MARKER = "_COMMIT"


def file_layout(table: str):
    """The columns a run writes into `table`'s files: its layout minus its partition columns."""
    return without(LAYOUTS[table], PARTITIONS.get(table, ()))


def table_schema(table: str):
    """`table` as readers see it (Spark StructType): its layout, then `run_id`."""
    from pyspark.sql.types import StringType

    return spark_schema(LAYOUTS[table]).add("run_id", StringType())


def conform(frame, layout, **columns):
    """`frame` as rows of `layout` (a pyarrow schema): its fields in order, each cast to its Spark
    type, taken from `frame` by name unless `columns` gives the field's value (name -> Column)."""
    from pyspark.sql import functions as F

    return frame.select(*[columns.get(f.name, F.col(f.name)).cast(f.dataType).alias(f.name)
                          for f in spark_schema(layout)])


def write_counted(frame, path: str, **metrics) -> dict[str, int]:
    """Write `frame` as Parquet at `path`; returns its row count (`rows`) and each of `metrics`
    (name -> aggregate Column over the written rows), observed by the write itself, so no second
    Spark job reads back what was just written to count it."""
    from pyspark.sql import Observation
    from pyspark.sql import functions as F

    observation = Observation(f"write-{uuid.uuid4().hex[:8]}")
    (frame.observe(observation, F.count(F.lit(1)).alias("rows"),
                   *[column.alias(name) for name, column in metrics.items()])
     .write.parquet(path))
    return {name: int(value) for name, value in observation.get.items()}


def new_run_id(prefix: str | None = None) -> str:
    """Unique run id: `prefix-`, then UTC time and random hex (sortable within a prefix; never
    parses as a number)."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:8]
    return f"{prefix}-{stamp}" if prefix else stamp


_RUN_ID = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,199}$")


def run_id_arg(value: str) -> str:
    """A run id (prefix) given on a command line: it names partition directories, so a safe name."""
    if not _RUN_ID.match(value):
        raise argparse.ArgumentTypeError(
            f"run id prefix {value!r}: use a letter, then letters, digits, '_', '.' or '-' (at most 200)")
    return value


@dataclass
class Commit:
    """A run's pending table changes: staged dir -> table dir moves; partitions it replaces."""

    run_id: str
    moves: list[tuple[str, str]] = field(default_factory=list)
    # (partition dir, run dir kept): every other `run_id=` dir in the partition is deleted (--force).
    replaces: list[tuple[str, str]] = field(default_factory=list)


class TableStore:
    """The tables under one ROOT, for one SparkSession."""

    def __init__(self, spark, root: str):
        self.spark = spark
        self.root = root.rstrip("/")
        jvm = spark._jvm
        self._Path = jvm.org.apache.hadoop.fs.Path
        self._fs = self._Path(self.root).getFileSystem(spark._jsc.hadoopConfiguration())
        self._jvm = jvm

    # -- paths ------------------------------------------------------------------------------------
    def table(self, name: str) -> str:
        return f"{self.root}/{name}"

    def staging(self, run_id: str, name: str = "") -> str:
        return f"{self.root}/{STAGING}/{run_id}" + (f"/{name}" if name else "")

    # -- filesystem -------------------------------------------------------------------------------
    def exists(self, path: str) -> bool:
        return bool(self._fs.exists(self._Path(path)))

    def children(self, path: str) -> list[str]:
        """Names directly under `path` (empty when it does not exist)."""
        if not self.exists(path):
            return []
        return sorted(str(s.getPath().getName()) for s in self._fs.listStatus(self._Path(path)))

    def delete(self, path: str) -> None:
        self._fs.delete(self._Path(path), True)

    def _rename(self, src: str, dst: str) -> None:
        self._fs.mkdirs(self._Path(dst).getParent())
        if not self._fs.rename(self._Path(src), self._Path(dst)):
            raise OSError(f"rename {src} -> {dst} failed")

    def _write_text(self, path: str, text: str) -> None:
        # Written beside, then renamed: a torn marker must never look like a commit.
        tmp = path + ".tmp"
        out = self._fs.create(self._Path(tmp), True)
        try:
            out.write(bytearray(text.encode("utf-8")))
        finally:
            out.close()
        self._rename(tmp, path)

    def _read_text(self, path: str) -> str:
        stream = self._fs.open(self._Path(path))
        try:
            return str(self._jvm.org.apache.commons.io.IOUtils.toString(stream, "UTF-8"))
        finally:
            stream.close()

    def has_data(self, path: str) -> bool:
        """True when `path` holds at least one committed parquet file (recursively)."""
        if not self.exists(path):
            return False
        files = self._fs.listFiles(self._Path(path), True)
        while files.hasNext():
            status = files.next()
            name = str(status.getPath().getName())
            rel = str(status.getPath().toString())[len(str(self._fs.makeQualified(self._Path(path)).toString())):]
            if name.endswith(".parquet") and "/_" not in rel and "/." not in rel:
                return True
        return False

    def write_report(self, run_id: str, report: dict) -> None:
        """Record a committed run's counts at `_runs/<run_id>.json` (what orchestrators reconcile)."""
        self._write_text(f"{self.root}/{RUNS}/{run_id}.json", json.dumps(report, sort_keys=True))

    # -- commit protocol --------------------------------------------------------------------------
    def commit(self, commit: Commit) -> None:
        """Make a staged run visible: write the commit point, apply it, drop the staging dir."""
        if not commit.moves and not commit.replaces:
            self.delete(self.staging(commit.run_id))
            return
        marker = self.staging(commit.run_id, COMMIT_MARKER)
        self._write_text(marker, json.dumps({"moves": commit.moves, "replaces": commit.replaces}))
        self._apply(commit.run_id, marker)

    def _apply(self, run_id: str, marker: str) -> None:
        plan = json.loads(self._read_text(marker))
        for src, dst in plan["moves"]:
            # Idempotent: after a crash some moves are done (src gone, dst present).
            if self.exists(src) and not self.exists(dst):
                self._rename(src, dst)
        for partition, keep in plan["replaces"]:
            for name in self.children(partition):
                if name.startswith("run_id=") and f"{partition}/{name}" != keep:
                    self.delete(f"{partition}/{name}")
        self.delete(self.staging(run_id))

    def recover(self) -> list[str]:
        """Roll committed runs forward and delete uncommitted staging (a crashed run's leftovers).

        Returns the run ids that were rolled forward. Call at the start of every run; not safe to
        run concurrently with another writer on the same ROOT (one backfill per ROOT at a time).
        """
        rolled = []
        for run_id in self.children(f"{self.root}/{STAGING}"):
            marker = self.staging(run_id, COMMIT_MARKER)
            if self.exists(marker):
                log.info("rolling forward committed run %s", run_id)
                self._apply(run_id, marker)
                rolled.append(run_id)
            else:
                log.info("deleting uncommitted staging of run %s", run_id)
                self.delete(self.staging(run_id))
        return rolled

    # -- reading ----------------------------------------------------------------------------------
    def read(self, name: str):
        """The table as a DataFrame of `table_schema(name)`: its columns, order and types (an empty
        frame when nothing is committed yet)."""
        from pyspark.sql import functions as F

        schema = table_schema(name)
        path = self.table(name)
        if not self.has_data(path):
            return self.spark.createDataFrame([], schema)
        # Read under the table's schema, not one inferred from a file: files written before a
        # column was added (a new feature version's) read it as null.
        frame = self.spark.read.schema(schema).parquet(path)
        # Partition values are read as strings (partition type inference is off): cast them, as
        # every column, to its layout type (a no-op for the files' own columns).
        return frame.select(*[F.col(f.name).cast(f.dataType).alias(f.name) for f in schema])


def register_views(spark, root: str) -> list[str]:
    """Temp views `features`, `photos`, `scores`, `quarantine`, `scores_served` and `photo_scores`
    over ROOT.

    Each table view has its table's layout (`table_schema`; `scores` carries `model_version` as a
    number and every row, served and shadow); `scores_served` is what consumers read: the score
    rows with role `served` (or none: files from before roles, all served), never a shadow row;
    `photo_scores` gives every photo id the served score of its content (duplicates share one
    score row). Returns the view names.
    """
    store = TableStore(spark, root)
    frames = {name: store.read(name) for name in TABLES}
    for name, frame in frames.items():
        frame.createOrReplaceTempView(name)
    spark.sql("SELECT * FROM scores WHERE role IS NULL OR role = 'served'").createOrReplaceTempView("scores_served")
    spark.sql(
        "SELECT p.photo_id, p.uri, s.content_sha256, s.model_name, s.model_version, s.export_format, s.score, "
        "s.feature_version, s.scored_at_ms FROM photos p JOIN scores_served s ON p.content_sha256 = s.content_sha256"
    ).createOrReplaceTempView("photo_scores")
    return [*frames, "scores_served", "photo_scores"]


def run_sql(spark, tables: str, query: str):
    """The query's DataFrame, with the table views registered over `tables`."""
    register_views(spark, tables)
    return spark.sql(query)
