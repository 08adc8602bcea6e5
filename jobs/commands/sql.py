"""`photoscore sql "SELECT ..."`: Spark SQL over the backfill tables.

Views: `features`, `photos` (photo_id -> content_sha256), `scores` (one row per content and model
version, served and shadow: a rollout's challenger or a former champion), `quarantine`,
`scores_served` (what consumers read: the served rows only, never a shadow score) and
`photo_scores` (every photo id with the served score of its content).
"""
from __future__ import annotations

import sys


def register(subparsers) -> None:
    parser = subparsers.add_parser("sql", help="Spark SQL over the feature, score and quarantine tables",
                                   description=__doc__)
    parser.add_argument("query", help='e.g. "SELECT photo_id, score FROM photo_scores ORDER BY score DESC LIMIT 10"')
    parser.add_argument("--tables", default=None, metavar="ROOT", help="table root (default: config storage.tables)")
    parser.add_argument("--limit", type=int, default=1000, help="rows to print at most (default 1000)")
    parser.add_argument("--master", default=None, help="override config spark.master")
    parser.set_defaults(handler=run)


def run(args, settings) -> int:
    import logging

    import pandas as pd

    from pyspark.errors import PySparkException

    from jobs.spark_session import get_session
    from jobs.spark_tables import run_sql
    from udfs.errors import PhotoscoreError

    tables = args.tables or settings.resolve(settings.storage.tables)
    spark = get_session(settings.spark, "photoscore-sql", master=args.master)
    spark.sparkContext.setLogLevel("ERROR")
    logging.getLogger("py4j").setLevel(logging.WARNING)
    try:
        frame = run_sql(spark, tables, args.query)
        rows = frame.limit(args.limit).toPandas()
    except PySparkException as exc:
        raise PhotoscoreError(f"query failed: {str(exc).splitlines()[0]}") from None
    finally:
        spark.stop()
    with pd.option_context("display.max_rows", args.limit, "display.width", 200,
                                             "display.max_columns", 50):
        print(rows.to_string(index=False) if len(rows) else "(no rows)", file=sys.stdout)
    return 0
