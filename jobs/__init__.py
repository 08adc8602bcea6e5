"""Entrypoints: the `photoscore` CLI, spark-submit jobs and the PyFlink job. They parse arguments,
load config and wire I/O; the work itself lives in `udfs/` and `models/`."""
