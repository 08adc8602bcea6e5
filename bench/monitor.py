"""Time of one `photoscore monitor` run over a window of 1 M score rows, against reading the same
tables with pyarrow alone (the floor any monitor pays), in one run on this machine.

    .venv/bin/python bench/monitor.py [--rows 1000000] [--keep]

Writes synthetic tables (photos, features of every feature-version-2 column, scores, 2 %
quarantined inputs) in files of 100 k rows as the backfills do, and a reference profile of
2,000 rows drawn from the same generator; then times (best of 2) the monitor's work after the
model is resolved - read the window (jobs.monitor.read_window), judge it (udfs.drift.judge_window:
PSI, KS and Wasserstein per column), render report.html - and a plain `pyarrow.dataset` read of
the same columns. Ends with one `bench: name=monitor ...` line.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jobs.config import load_settings  # noqa: E402
from jobs.monitor import read_window  # noqa: E402
from jobs.monitor_report import render_report  # noqa: E402
from udfs.drift import DriftThresholds, judge_window  # noqa: E402
from udfs.features import FEATURE_NAMES, FEATURE_VERSION  # noqa: E402
from udfs.reference_profile import ReferenceProfile, build_profile, quarantine_summary  # noqa: E402
from udfs.schemas import PHOTOS, QUARANTINE_TABLE, SCORE, feature_schema, without  # noqa: E402

FILE_ROWS = 100_000
MODEL, VERSION = "photo_quality", 1


def _features(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    # Each feature its own scale and shape, so the per-column tests see varied data.
    return {name: (rng.gamma(2.0 + i % 5, 1.0 + i, n)).astype(np.float32) for i, name in enumerate(FEATURE_NAMES)}


def write_tables(root: Path, rows: int, seed: int = 0) -> None:
    """Synthetic photos/features/scores/quarantine tables of `rows` scored contents."""
    rng = np.random.default_rng(seed)
    now = int(time.time() * 1000)
    score_layout = without(SCORE, ("model_name", "model_version"))
    for start in range(0, rows, FILE_ROWS):
        n = min(FILE_ROWS, rows - start)
        part = f"run_id=r{start // FILE_ROWS:04d}/part-0.parquet"
        contents = np.array([f"{i:064x}" for i in range(start, start + n)])
        seen = now - rng.integers(0, 86_400_000, n)
        tables = {
            "photos": pa.table({"photo_id": contents, "uri": np.char.add("/photos/", contents), "content_sha256": contents,
                                "file_bytes": rng.integers(10_000, 900_000, n), "seen_at_ms": seen}, schema=PHOTOS),
            "features": pa.table({"photo_id": contents, "content_sha256": contents,
                                  "feature_version": np.full(n, FEATURE_VERSION, np.int32), "format": np.full(n, "JPEG"),
                                  "dhash": rng.integers(-2**62, 2**62, n), **_features(rng, n)},
                                 schema=feature_schema(FEATURE_NAMES)),
            f"scores/model_name={MODEL}/model_version={VERSION}": pa.table(
                {"photo_id": contents, "content_sha256": contents, "export_format": np.full(n, "onnx"),
                 "score": rng.beta(2, 5, n), "feature_version": np.full(n, FEATURE_VERSION, np.int32),
                 "scored_at_ms": seen + 1000, "source": np.full(n, "batch"), "from_cache": np.zeros(n, bool),
                 "role": np.full(n, "served")}, schema=score_layout),
        }
        bad = n // 50
        tables["quarantine"] = pa.table({
            "source_ref": np.char.add("/photos/bad-", contents[:bad]), "photo_id": contents[:bad],
            "stage": np.full(bad, "decode"), "reason_code": np.full(bad, "truncated_image"),
            "detail": np.full(bad, ""), "seen_at_ms": seen[:bad], "content_sha256": contents[:bad],
            "feature_version": np.full(bad, FEATURE_VERSION, np.int32)}, schema=QUARANTINE_TABLE)
        for name, table in tables.items():
            (root / name / part).parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(table, root / name / part)


def reference(seed: int = 1) -> ReferenceProfile:
    rng = np.random.default_rng(seed)
    train = np.column_stack(list(_features(rng, 2000).values()))
    return ReferenceProfile(build_profile(FEATURE_NAMES, train, rng.beta(2, 5, 2000), FEATURE_VERSION,
                                          quarantine_summary(2000, ["truncated_image"] * 40), 2000))


def best_of(runs: int, fn) -> tuple[float, object]:
    times, result = [], None
    for _ in range(runs):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return min(times), result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="photoscore-bench-monitor-"))
    try:
        started = time.perf_counter()
        write_tables(work / "tables", args.rows)
        print(f"wrote {args.rows:,} rows of each table in {time.perf_counter() - started:.1f} s ({work})", flush=True)
        settings = load_settings([f"home={work / 'home'}"], env={})
        profile, thresholds = reference(), DriftThresholds.from_settings(settings.monitor)
        since = int(time.time() * 1000) - 2 * 86_400_000

        def plain_read():
            return [ds.dataset(work / "tables" / t, format="parquet", partitioning="hive").to_table(columns=cols)
                    for t, cols in (("photos", ["uri", "content_sha256", "seen_at_ms"]),
                                    ("features", ["content_sha256", *FEATURE_NAMES]),
                                    (f"scores/model_name={MODEL}/model_version={VERSION}", ["content_sha256", "score"]))]

        def monitor():
            window = read_window(settings, str(work / "tables"), MODEL, VERSION, FEATURE_VERSION,
                                 list(FEATURE_NAMES), since)
            body = judge_window(profile, window.features, window.scores, window.inputs, window.quarantined, thresholds)
            body.update(model_uri=f"models:/{MODEL}/{VERSION}", model_name=MODEL, model_version=VERSION,
                        feature_version=FEATURE_VERSION, tables=str(work), since_ms=since, until_ms=window.until_ms,
                        score_failed=window.score_failed, timeline=window.timeline.to_dict(orient="records"))
            render_report(body, profile, window)
            return window, body

        read_s, _ = best_of(2, plain_read)
        monitor_s, (window, body) = best_of(2, monitor)
        assert body["feature_rows"] == args.rows and window.inputs == args.rows + args.rows // 50
        print(f"{'step':40s} {'seconds':>8s} {'rows/s':>12s}")
        print(f"{'pyarrow read of the same columns':40s} {read_s:8.2f} {args.rows / read_s:12,.0f}")
        print(f"{'photoscore monitor (read+judge+report)':40s} {monitor_s:8.2f} {args.rows / monitor_s:12,.0f}")
        print(f"verdict {body['verdict']} ({len(body['alarms'])} alarms; the reference is another draw of the same generator)")
        print(f"bench: name=monitor rows={args.rows} monitor_s={monitor_s:.2f} read_s={read_s:.2f} "
              f"monitor_over_read={monitor_s / read_s:.2f}")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
