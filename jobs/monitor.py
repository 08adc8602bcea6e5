"""`photoscore monitor`: a window of the feature, score and quarantine tables against the reference
profile of the model version that scored them (udfs.drift.judge_window), written as drift.json and
report.html under `<home>/<monitor.out>/<model>/v<version>/<UTC time>/`.

The window is what arrived from `since` on: photos first seen then (the photos table), the inputs
quarantined then (quarantine rows that are not a model's `score_failed`), the features of those
photos' contents at the model's feature version, and the version's served scores of those
contents or scored then. Inputs are the distinct photo URIs and quarantined source refs, so a
corrupt photo that has a content hash and a quarantine row counts once.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from jobs.rollout_compare import SCORE_FAILED, source_ref_prefix
from jobs.table_reader import parse_since, read_dataset, table_filesystem
from udfs.drift import ALARM, DriftThresholds, judge_window
from udfs.errors import PhotoscoreError
from udfs.schemas import PHOTOS, QUARANTINE_TABLE, SCORE, feature_schema, without

log = logging.getLogger("photoscore.monitor")

ALARM_EXIT = 3
DRIFT_JSON, REPORT_HTML = "drift.json", "report.html"
_STAMP = "%Y%m%dT%H%M%S%fZ"


@dataclass
class Window:
    """What the tables hold for one model version from `since_ms` on (see the module docstring)."""

    since_ms: int
    until_ms: int
    features: dict[str, np.ndarray]
    scores: np.ndarray
    inputs: int
    quarantined: dict[str, int]
    score_failed: int
    timeline: pd.DataFrame = field(default_factory=pd.DataFrame)   # bucket_start_ms, inputs, quarantined, scored


@dataclass
class MonitorResult:
    """One monitor run: its verdict, alarms, where its files went and what to print."""

    verdict: str
    alarms: list[dict]
    drift_path: Path
    report_path: Path
    lines: list[str]

    @property
    def exit_code(self) -> int:
        return ALARM_EXIT if self.verdict == ALARM else 0


def _timeline(arrivals: pd.Series, quarantined: pd.Series, scored: pd.Series, since_ms: int, until_ms: int) -> pd.DataFrame:
    # Hourly buckets over a window of up to three days, daily beyond: a chart of at most ~72 bars.
    bucket_ms = 3_600_000 if until_ms - since_ms <= 3 * 86_400_000 else 86_400_000
    counts = {name: (times.astype("int64") // bucket_ms * bucket_ms).value_counts()
              for name, times in (("inputs", arrivals), ("quarantined", quarantined), ("scored", scored))}
    frame = pd.DataFrame(counts).fillna(0).astype("int64").sort_index()
    return frame.rename_axis("bucket_start_ms").reset_index()


def read_window(settings, tables: str, model_name: str, version: int, feature_version: int,
                feature_names: list[str], since_ms: int, until_ms: int | None = None) -> Window:
    """The window of ROOT's photos, quarantine, features and scores tables for one model version."""
    import pyarrow.dataset as ds

    until_ms = until_ms if until_ms is not None else int(time.time() * 1000)
    fs, root = table_filesystem(settings, tables)
    photos = read_dataset(fs, f"{root}/photos", PHOTOS, ["uri", "content_sha256", "seen_at_ms"],
                          ds.field("seen_at_ms") >= since_ms)
    quarantine = read_dataset(fs, f"{root}/quarantine", QUARANTINE_TABLE,
                              ["source_ref", "reason_code", "seen_at_ms"], ds.field("seen_at_ms") >= since_ms)
    refs = quarantine["source_ref"].astype(str)
    input_quarantine = quarantine[~refs.str.startswith("models:/")]
    score_failed = int((refs.str.startswith(source_ref_prefix(model_name, version))
                        & (quarantine["reason_code"] == SCORE_FAILED)).sum())

    first_seen = pd.concat([photos[["uri", "seen_at_ms"]],
                            input_quarantine.rename(columns={"source_ref": "uri"})[["uri", "seen_at_ms"]]])
    first_seen = first_seen.sort_values("seen_at_ms", kind="stable").drop_duplicates("uri")
    quarantined = input_quarantine.drop_duplicates("source_ref").groupby("reason_code").size()

    score_files = without(SCORE, ("model_name", "model_version"))
    scores = read_dataset(fs, f"{root}/scores/model_name={model_name}/model_version={version}", score_files,
                          ["content_sha256", "score", "scored_at_ms", "role"])
    contents = set(photos["content_sha256"].dropna())
    scores = scores[(scores["role"].isna() | (scores["role"] == "served"))
                    & (scores["content_sha256"].isin(contents) | (scores["scored_at_ms"] >= since_ms))]
    scores = scores.sort_values("scored_at_ms", kind="stable").drop_duplicates("content_sha256", keep="last")
    contents |= set(scores["content_sha256"])

    wanted = [str(c) for c in contents]
    features = read_dataset(fs, f"{root}/features", feature_schema(feature_names), ["content_sha256", *feature_names],
                            (ds.field("feature_version") == feature_version) & ds.field("content_sha256").isin(wanted))
    features = features.drop_duplicates("content_sha256")
    return Window(
        since_ms=since_ms, until_ms=until_ms,
        features={name: features[name].to_numpy(dtype=float, na_value=np.nan) for name in feature_names},
        scores=scores["score"].to_numpy(dtype=float, na_value=np.nan),
        inputs=len(first_seen), quarantined={str(k): int(v) for k, v in quarantined.items()},
        score_failed=score_failed,
        timeline=_timeline(first_seen["seen_at_ms"], input_quarantine.drop_duplicates("source_ref")["seen_at_ms"],
                           scores["scored_at_ms"].dropna(), since_ms, until_ms))


def summary_lines(body: dict) -> list[str]:
    """What `photoscore monitor` prints: the verdict, each alarm, and the headline figures."""
    q, s = body["quarantine"], body["score"]
    lines = [f"{body['model_uri']} (version {body['model_version']}, feature version {body['feature_version']}): "
             f"{body['verdict'].upper()} over {body['feature_rows']} featured contents, {body['score_rows']} scores, "
             f"{q['inputs']} inputs since {_iso(body['since_ms'])}"]
    lines += [f"  ALARM {a['message']}" for a in body["alarms"]]
    if s["mean"] is not None:
        lines.append(f"  score: mean {s['reference_mean']:.4g} -> {s['mean']:.4g}, PSI {s['psi']:.3f} ({s['psi_band']}), "
                     f"KS p={s['ks_pvalue']:.2g}{' (drifted)' if s['drifted'] else ''}")
    lines.append(f"  quarantine: {q['share']:.1%} of inputs (reference {q['reference_share']:.1%}); "
                 f"score failures {body['score_failed']}")
    if body["verdict"] == "insufficient":
        lines.append(f"  too little evidence for a drift verdict: fewer than {body['thresholds']['min_rows']} "
                     "featured contents in the window (widen --since or lower monitor.min_rows)")
    return lines


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def monitor_root(settings) -> Path:
    """Where monitor runs go by default: `monitor.out`, relative to home."""
    return Path(settings.resolve(settings.monitor.out))


def reports_root(settings, model_name: str) -> Path:
    """Where a model's monitor runs go by default: <monitor.out>/<model>."""
    return monitor_root(settings) / model_name


def run_monitor(settings, model_uri: str, tables: str | None = None, since: str | None = None,
                out: str | None = None) -> MonitorResult:
    """Monitor `model_uri`'s window of the tables under `tables` (default: storage.tables) from
    `since` (default: monitor.window ago); write drift.json and report.html into `out`."""
    from jobs.monitor_report import render_report
    from models.registry import resolve_bundle
    from udfs.bundle import read_feature_schema
    from udfs.reference_profile import load_profile

    name, version, bundle = resolve_bundle(model_uri, settings)
    profile = load_profile(bundle)
    if profile is None:
        raise PhotoscoreError(f"{model_uri} (version {version}) was built before bundles carried a reference "
                              "profile; retrain it (`photoscore train`) to monitor it")
    feature_version = read_feature_schema(bundle).feature_version
    now_ms = int(time.time() * 1000)
    since_ms = parse_since(since or settings.monitor.window, now_ms)
    tables = tables or settings.resolve(settings.storage.tables)
    window = read_window(settings, tables, name, version, feature_version, profile.feature_names, since_ms, now_ms)
    body = judge_window(profile, window.features, window.scores, window.inputs, window.quarantined,
                        DriftThresholds.from_settings(settings.monitor))
    body = {"model_uri": model_uri, "model_name": name, "model_version": version, "feature_version": feature_version,
            "tables": tables, "since_ms": since_ms, "until_ms": now_ms, "score_failed": window.score_failed,
            **body, "timeline": window.timeline.to_dict(orient="records")}
    run_dir = Path(out) if out else (reports_root(settings, name) / f"v{version}"
                                     / datetime.now(timezone.utc).strftime(_STAMP))
    run_dir.mkdir(parents=True, exist_ok=True)
    drift_path = run_dir / DRIFT_JSON
    drift_path.write_text(json.dumps(body, indent=2, allow_nan=False, default=_json_default) + "\n")
    report_path = run_dir / REPORT_HTML
    report_path.write_text(render_report(body, profile, window))
    lines = [*summary_lines(body), f"  drift.json: {drift_path}", f"  report: {report_path}"]
    return MonitorResult(body["verdict"], body["alarms"], drift_path, report_path, lines)


def _json_default(value):
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def alarm_streak(settings, model_name: str) -> int:
    """How many of the model's newest monitor runs (in <home>/<monitor.out>/<model>, any version)
    ended in alarm, in a row. A run with too little evidence neither extends nor breaks a streak."""
    runs = sorted(reports_root(settings, model_name).glob(f"v*/*/{DRIFT_JSON}"), key=lambda p: p.parent.name,
                  reverse=True)
    streak = 0
    for path in runs:
        verdict = json.loads(path.read_text()).get("verdict")
        if verdict == ALARM:
            streak += 1
        elif verdict != "insufficient":
            break
    return streak
