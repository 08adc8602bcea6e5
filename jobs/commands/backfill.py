"""`photoscore backfill features|scores`: the Spark backfills, submitted with spark-submit.

The command builds the same spark-submit line an operator would type (master, deploy mode and
`spark.conf.*` from config, see docs/spark.md) and runs it, so the CLI, Airflow and a person at a
shell all run one entrypoint: `jobs/backfill_features.py` or `jobs/backfill_scores.py`.
"""
from __future__ import annotations

import subprocess
import sys


def register(subparsers) -> None:
    from jobs import backfill_features, backfill_scores

    parser = subparsers.add_parser("backfill", help="Spark backfills: features from photos, scores from features",
                                   description=__doc__)
    parser.add_argument("--master", default=None, help="override config spark.master for this run")
    jobs = parser.add_subparsers(dest="backfill_job", metavar="JOB", required=True)
    features = jobs.add_parser("features", help="photos (directory or manifest) -> features, photos, quarantine",
                               description=backfill_features.__doc__.split("\n\n")[0])
    backfill_features.add_arguments(features)
    features.set_defaults(handler=run, script="backfill_features.py")
    scores = jobs.add_parser("scores", help="stored features -> scores of one model version, or of a model's rollout plan (--plan)",
                             description=backfill_scores.__doc__.split("\n\n")[0])
    backfill_scores.add_arguments(scores)
    scores.set_defaults(handler=run, script="backfill_scores.py")


def job_arguments(args) -> list[str]:
    """The parsed flags back as the job's command-line flags (both jobs take the same ones)."""
    out: list[str] = []
    for flag, dest in (("--input", "input"), ("--glob", "glob"), ("--input-kind", "input_kind"),
                       ("--model", "model"), ("--format", "export_format"), ("--tables", "tables"),
                       ("--feature-version", "feature_version")):
        value = getattr(args, dest, None)
        if value is not None:
            out += [flag, str(value)]
    for flag in ("force", "plan"):
        if getattr(args, flag, False):
            out.append(f"--{flag}")
    for item in args.overrides:
        out += ["--set", item]
    return out


def run(args, settings) -> int:
    """Run the job with spark-submit, streaming its output; returns its exit code."""
    from jobs.spark_session import spark_env, spark_submit_command

    cmd = spark_submit_command(settings.spark, args.script, job_arguments(args), master=args.master)
    proc = subprocess.run(cmd, env=spark_env())
    if proc.returncode != 0:
        print(f"photoscore backfill {args.backfill_job}: spark-submit exited with {proc.returncode}",
              file=sys.stderr)
    return proc.returncode
