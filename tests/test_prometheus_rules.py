"""The stream's alert rules (conf/prometheus/photoscore_rules.yml): their promtool unit tests pass,
and every metric they name is one the job exports (udfs.stream_metrics; the integration test
tests/test_stream_metrics_job.py reads those names back from the running job's page)."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import yaml

from udfs.stream_metrics import KEYS, SCOPE, exported_name

RULES_DIR = Path(__file__).resolve().parents[1] / "conf" / "prometheus"


def test_alert_rules_pass_their_promtool_unit_tests():
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: `make system-packages` installs Debian's prometheus package"
    for args in (["check", "rules", "photoscore_rules.yml"], ["test", "rules", "photoscore_rules_test.yml"]):
        out = subprocess.run([promtool, *args], cwd=RULES_DIR, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stdout + out.stderr


def test_rules_name_only_exported_metrics():
    rules = yaml.safe_load((RULES_DIR / "photoscore_rules.yml").read_text())
    exprs = [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    named = {name for expr in exprs for name in re.findall(rf"{SCOPE}\w+", expr)}
    exported = {exported_name(metric) for metric in KEYS}
    assert named and named <= exported, named - exported
    tested = (RULES_DIR / "photoscore_rules_test.yml").read_text()
    assert set(re.findall(rf"{SCOPE}\w+", tested)) <= exported
