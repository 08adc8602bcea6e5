"""`photoscore monitor` over tables the Spark backfills wrote: photos darkened by a fixed gamma
alarm on mean_luma (exit 3, report written); the same photos undarkened are quiet; a surge of broken
files alarms on the quarantine share, by reason."""
from __future__ import annotations

import json
import shutil
from datetime import datetime, timezone
from pathlib import Path

import pytest

from _spark_fixtures import home_config
from jobs.backfill_features import run_feature_backfill
from jobs.backfill_scores import run_score_backfill
from jobs.cli import main as cli_main
from jobs.monitor import run_monitor
from udfs.features import content_sha256
from jobs.demo_monitor import gamma_darkened as darkened

pytestmark = pytest.mark.integration
MODEL = "models:/photo_quality@champion"


@pytest.fixture
def monitor_settings(spark_model_home, corpus_dir, tmp_path):
    return home_config(spark_model_home).updated(
        storage={"photo_roots": [str(corpus_dir), str(tmp_path)]}, monitor={"min_rows": 30})


def _backfill(spark, settings, source: Path, tables: Path, score: bool = True) -> None:
    run_feature_backfill(spark, settings, str(source), str(tables))
    if score:
        run_score_backfill(spark, settings, MODEL, "onnx", str(tables))


def test_darkened_photos_alarm_on_mean_luma_and_the_same_photos_undarkened_are_quiet(
        spark, monitor_settings, corpus_labels, tmp_path, monkeypatch, capsys):
    started = datetime.now(timezone.utc).isoformat()
    clean, dark = tmp_path / "clean", tmp_path / "dark"
    clean.mkdir(), dark.mkdir()
    for photo in corpus_labels["photo_id"]:
        shutil.copy2(photo, clean / Path(photo).name)
        (dark / Path(photo).name).write_bytes(darkened(photo))
    _backfill(spark, monitor_settings, clean, tmp_path / "clean_tables")
    _backfill(spark, monitor_settings, dark, tmp_path / "dark_tables")

    quiet = run_monitor(monitor_settings, MODEL, tables=str(tmp_path / "clean_tables"), since=started)
    assert quiet.verdict == "quiet" and quiet.exit_code == 0, quiet.lines

    monkeypatch.setenv("PHOTOSCORE_HOME", str(monitor_settings.home))
    monkeypatch.setenv("PHOTOSCORE_MONITOR_MIN_ROWS", "30")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)   # an ambient registry would win
    code = cli_main(["monitor", "--model", MODEL, "--tables", str(tmp_path / "dark_tables"), "--since", "1h"])
    printed = capsys.readouterr().out
    assert code == 3, printed
    assert "ALARM mean_luma" in printed
    drift = json.loads(Path(printed.split("drift.json: ")[1].split()[0]).read_text())
    drifted = [a["name"] for a in drift["alarms"] if a["kind"] == "feature"]
    contents = {content_sha256(p.read_bytes()) for p in dark.iterdir()}   # the corpus has exact duplicates
    assert "mean_luma" in drifted and drift["feature_rows"] == len(contents), drifted
    assert drift["features"]["mean_luma"]["mean"] < drift["features"]["mean_luma"]["reference_mean"]
    report = Path(printed.split("report: ")[1].split()[0]).read_text()
    assert "mean_luma" in report and report.count("data:image/png;base64,") >= len(drifted) + 2
    assert "http" not in report.split("</style>")[1]   # self-contained: nothing fetched


def test_a_surge_of_broken_files_alarms_on_the_quarantine_share(spark, monitor_settings, corpus_dir,
                                                                 corpus_labels, tmp_path):
    batch = tmp_path / "batch"
    batch.mkdir()
    for photo in list(corpus_labels["photo_id"])[:40]:
        shutil.copy2(photo, batch / Path(photo).name)
    broken = sorted((corpus_dir / "broken").iterdir())
    for copy in range(3):   # each broken file thrice under its own name: a surge of distinct inputs
        for path in broken:
            shutil.copy2(path, batch / f"{copy}_{path.name}")
    tables = tmp_path / "tables"
    _backfill(spark, monitor_settings, batch, tables, score=False)

    result = run_monitor(monitor_settings, MODEL, tables=str(tables), since="1h")
    assert result.verdict == "alarm", result.lines
    quarantine = json.loads(result.drift_path.read_text())["quarantine"]
    assert quarantine["inputs"] == 40 + 3 * len(broken)
    assert quarantine["quarantined"] == sum(quarantine["by_reason"].values()) >= 3 * len(broken) - 3
    assert [a["kind"] for a in result.alarms] == ["quarantine"], result.alarms
    assert result.report_path.is_file()
