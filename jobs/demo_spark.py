"""The Spark part of `make demo`: backfill the corpus' features and scores with spark-submit (the
same commands an operator runs), then print the 10 lowest-quality photos with Spark SQL."""
from __future__ import annotations

import os
import shlex
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from udfs.settings import Settings
from udfs.errors import PhotoscoreError

LOWEST_QUALITY_SQL = """
SELECT photo_id, round(score, 3) AS p_low_quality, model_version, export_format
FROM photo_scores
WHERE model_name = '{name}'
ORDER BY score DESC, photo_id
LIMIT 10
"""


def submit_job(settings: Settings, script: str, args: list[str], env: Mapping[str, str] | None = None) -> str:
    """spark-submit one of jobs/ as an operator would, echoing it and its final counts line; `env`
    adds variables to this process's environment for the job only (e.g. a PHOTOSCORE_* setting)."""
    from jobs.spark_session import spark_env, spark_submit_command

    cmd = spark_submit_command(settings.spark, script, args)
    assignments = "".join(f"{k}={shlex.quote(v)} " for k, v in sorted((env or {}).items()))
    print(f"$ {assignments}spark-submit jobs/{script} " + " ".join(args), flush=True)
    proc = subprocess.run(cmd, env=spark_env({**os.environ, **(env or {})}), capture_output=True, text=True)
    if proc.returncode != 0:
        raise PhotoscoreError(f"spark-submit {script} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    # The job's result is its last `inputs=...` / `rows=...` line; log lines may follow it.
    last = next((line for line in reversed(proc.stdout.splitlines())
                 if line.startswith(("inputs=", "rows="))), "")
    print(f"  {last}", flush=True)
    return last


def run_spark_demo(settings: Settings, corpus_dir: Path | str, tables: Path | str,
                   model_uri: str | None = None, export_format: str = "code-java") -> None:
    """Backfill features of `corpus_dir/photos` and scores (JVM-native path by default) into
    `tables`, then print the 10 photos most likely to be low quality via Spark SQL."""
    from jobs.spark_tables import run_sql
    from jobs.spark_session import get_session

    corpus_dir, tables = Path(corpus_dir), str(tables)
    model_uri = model_uri or f"models:/{settings.mlflow.model_name}@{settings.mlflow.alias}"
    photos = corpus_dir / "photos" if (corpus_dir / "photos").is_dir() else corpus_dir
    submit_job(settings, "backfill_features.py", ["--input", str(photos), "--tables", tables])
    submit_job(settings, "backfill_scores.py", ["--model", model_uri, "--format", export_format, "--tables", tables])
    # Rescoring with nothing new: every identity is known, no work is done.
    submit_job(settings, "backfill_scores.py", ["--model", model_uri, "--format", export_format, "--tables", tables])
    name = model_uri.split(":/", 1)[1].split("@")[0].split("/")[0]
    spark = get_session(settings.spark, "photoscore-demo-sql", master="local[2]")
    try:
        print("the 10 lowest-quality photos (Spark SQL over the score table):", flush=True)
        rows = run_sql(spark, tables, LOWEST_QUALITY_SQL.format(name=name)).toPandas()
    finally:
        spark.stop()
    print(rows.to_string(index=False), flush=True)
    sys.stdout.flush()
