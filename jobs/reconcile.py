"""Reconcile backfill runs from what they committed, without Spark: the check an orchestrator runs
after `backfill_features.py` / `backfill_scores.py` (Airflow's reconcile task, or a person).

Each run writes `<tables>/_runs/<run_id>.json` after its commit (jobs/spark_tables.py). A run
reconciles when its own counts add up (inputs = featured + quarantined + known; rows = scored +
known + quarantined), the committed partitions hold exactly the rows it says it wrote (read from the
Parquet footers, no data scanned), and the quarantined share of its *new* inputs (those neither
featured before nor quarantined before) is at most the configured threshold.
"""
from __future__ import annotations

import json
import posixpath
from dataclasses import dataclass, field

import fsspec
import pyarrow.parquet as pq

from jobs.spark_tables import RUNS


@dataclass
class Verdict:
    """Per-run problems (empty: reconciled) and a line per run for the log."""

    lines: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _fs(tables: str):
    fs, root = fsspec.core.url_to_fs(tables)
    return fs, root.rstrip("/")


def read_reports(tables: str, prefix: str) -> list[dict]:
    """The reports of every run whose id starts with `prefix`, oldest first."""
    fs, root = _fs(tables)
    found = sorted(fs.glob(posixpath.join(root, RUNS, f"{prefix}*.json")))
    return [json.loads(fs.cat_file(path)) for path in found]


def committed_rows(tables: str, table: str, run_id: str, model: tuple[str, int] | None = None) -> int:
    """Rows in the committed Parquet files of one run's partition (footers only)."""
    fs, root = _fs(tables)
    parts = [root, table]
    if model:
        parts += [f"model_name={model[0]}", f"model_version={model[1]}"]
    files = fs.glob(posixpath.join(*parts, f"run_id={run_id}", "*.parquet"))
    return sum(pq.ParquetFile(fs.open(path, "rb")).metadata.num_rows for path in files)


def _top(reasons: dict[str, int], n: int = 3) -> str:
    ranked = sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))[:n]
    return ", ".join(f"{reason} x{count}" for reason, count in ranked) or "none recorded"


def check_report(tables: str, report: dict) -> list[str]:
    """The problems of one run's report (empty when its counts and committed rows agree)."""
    run = report["run_id"]
    problems = []
    if report["job"] == "scores_plan":
        # A run per a rollout plan: one score report per version, then its own quarantine rows.
        problems = [p for version in report["versions"] for p in check_report(tables, {**version, "job": "scores"})]
        model = None
    elif report["job"] == "features":
        if report["inputs"] != report["featured"] + report["quarantined"] + report["known"]:
            problems.append(f"{run}: inputs {report['inputs']} != featured {report['featured']} + "
                            f"quarantined {report['quarantined']} + known {report['known']}")
        model = None
    else:
        if report["rows"] != report["scored"] + report["known"] + report["quarantined"]:
            problems.append(f"{run}: rows {report['rows']} != scored {report['scored']} + known "
                            f"{report['known']} + quarantined {report['quarantined']}")
        model = (report["model_name"], report["model_version"])
    for table, rows in report["written"].items():
        found = committed_rows(tables, table, run, model if table == "scores" else None)
        if found != rows:
            problems.append(f"{run}: the job wrote {rows} {table} rows but {found} are committed")
    return problems


def quarantine_share(reports: list[dict]) -> tuple[int, int, dict[str, int]]:
    """(new inputs quarantined, new inputs, reasons) over the feature runs: new inputs are those
    neither featured nor quarantined by an earlier run."""
    bad = total = 0
    reasons: dict[str, int] = {}
    for report in reports:
        if report["job"] != "features":
            continue
        outcomes = report["outcomes"]
        bad += outcomes["read_failed"] + outcomes["failed"]
        total += outcomes["featured"] + outcomes["read_failed"] + outcomes["failed"]
        for reason, count in report["quarantine_reasons"].items():
            reasons[reason] = reasons.get(reason, 0) + count
    return bad, total, reasons


def reconcile(tables: str, reports: list[dict], max_quarantine_share: float) -> Verdict:
    """Check every report, and the quarantined share of the new inputs of them all; the verdict's
    lines summarise each run for the log."""
    verdict = Verdict()
    for report in reports:
        if report["job"] == "features":
            verdict.lines.append(
                f"{report['run_id']}: inputs={report['inputs']} featured={report['featured']} "
                f"quarantined={report['quarantined']} known={report['known']} decoded={report['decoded']}")
        else:
            verdict.lines += [
                f"{report['run_id']}: {v['model_name']}/{v['model_version']} ({v['export_format']}) "
                f"rows={v['rows']} scored={v['scored']} known={v['known']} "
                f"quarantined={v['quarantined']} decoded={report['decoded']}" for v in report.get("versions", [report])]
        verdict.problems += check_report(tables, report)
    bad, total, reasons = quarantine_share(reports)
    if total:
        verdict.lines.append(f"new inputs: {total}, quarantined {bad} ({bad / total:.1%}); "
                             f"reasons: {_top(reasons, len(reasons))}")
        if bad / total > max_quarantine_share:
            verdict.problems.append(f"{bad} of {total} new inputs quarantined ({bad / total:.0%} > "
                                    f"{max_quarantine_share:.0%}); top reasons: {_top(reasons)}")
    return verdict
