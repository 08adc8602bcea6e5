"""The operator's rollout commands on a real MLflow registry (SQLite): rollout set/status/stop,
promote, rollback, models --history, their refusals, and compare over a score table written in
its real partition layout."""
from __future__ import annotations

import json

import numpy as np
import pytest

from _models_fixtures import built_bundle, copy_bundle, perturb_onnx
from jobs.cli import main as cli
from test_rollout_compare import CONTENTS, score_rows, write_quarantine, write_score_file

pytestmark = pytest.mark.integration
NAME = "pq_rollout"


@pytest.fixture(scope="module")
def registry(model_data, tmp_path_factory):
    """Three parity-passed versions (1-3) and a gate-failed one (4) of NAME in a fresh home."""
    from jobs.config import load_settings
    from models.build import seal_and_gate
    from models.registry import log_and_register

    home = tmp_path_factory.mktemp("home")
    settings = load_settings([f"home={home}"], env={})
    built = built_bundle("lightgbm", model_data, tmp_path_factory)
    for _ in range(3):
        log_and_register(built, NAME, settings, {"model_type": "lightgbm"})
    broken = copy_bundle(built, tmp_path_factory.mktemp("broken") / "b")
    perturb_onnx(broken, reseal=False)
    report, digest = seal_and_gate(broken, model_data["test"].X, model_data["train"].X)
    failed = type(built)(broken, built.model_type, report, built.metrics, digest, built.facts)
    assert log_and_register(failed, NAME, settings, {"model_type": "lightgbm"}).tags["parity"] == "failed"
    return home


@pytest.fixture
def run(registry, monkeypatch, capsys):
    """The CLI against the registry's home: (exit code, stdout, stderr)."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("PHOTOSCORE_ACTOR", "tester")

    def invoke(*argv: str) -> tuple[int, str, str]:
        code = cli(["--set", f"home={registry}", *argv])
        out = capsys.readouterr()
        return code, out.out, out.err
    return invoke


def score_table(root, challenger_scores):
    """Champion v1 over 400 contents (an old file without `role`), the challenger v2 over 300, and
    one score failure of v2 in the quarantine table."""
    champion = np.random.default_rng(5).uniform(0, 1, 400)
    write_score_file(root, 1, "r1", score_rows(CONTENTS, champion, 1, None), with_role=False, name=NAME)
    write_score_file(root, 2, "r2", score_rows(CONTENTS[:300], challenger_scores(champion[:300]), 2, "shadow"),
                     name=NAME)
    write_quarantine(root, [f"models:/{NAME}/2#{CONTENTS[300]}"])
    return str(root)


def test_rollout_promote_rollback_and_history_through_the_cli(run, tmp_path):
    code, _, err = run("rollout", "set", "--name", NAME, "--shadow", "100")
    assert code == 1 and "has no champion" in err, err
    code, _, err = run("rollback", "--name", NAME)
    assert code == 1 and "no champion to roll back" in err, err
    assert run("promote", "--name", NAME, "--version", "1", "--alias", "champion", "--why", "first model")[0] == 0

    code, _, err = run("rollout", "set", "--name", NAME, "--shadow", "100")
    assert code == 1 and "has no challenger" in err and "--challenger N" in err
    code, _, err = run("rollback", "--name", NAME)
    assert code == 1 and "names no champion before version 1" in err
    code, _, err = run("rollout", "set", "--name", NAME, "--challenger", "4", "--shadow", "100")
    assert code == 1 and "failed its parity gate" in err
    code, _, err = run("compare", "--name", NAME, "--tables", str(tmp_path))
    assert code == 1 and "no rollout to compare" in err

    code, out, _ = run("rollout", "set", "--name", NAME, "--challenger", "2", "--shadow", "100", "--why", "try v2")
    assert code == 0 and "challenger v2 (shadow 100 %, canary 0 %" in out
    assert run("rollout", "set", "--name", NAME, "--canary", "5")[0] == 0
    code, out, _ = run("rollout", "status", "--name", NAME, "--json")
    status = json.loads(out)
    assert (status["champion"], status["challenger"], status["shadow_percent"], status["canary_percent"]) == (1, 2, 100, 5)
    assert status["arms"] == {"champion": 0.0, "shadow": 95.0, "canary": 5.0} and status["salt"]
    assert [e["action"] for e in status["recent_events"]] == ["promote", "rollout_set", "rollout_set"]
    salt = status["salt"]
    code, out, _ = run("rollout", "status", "--name", NAME)
    assert "arms: champion 0 %, shadow 95 %, canary 5 %" in out and "why: try v2" in out

    # compare: a faithful challenger passes (exit 0), a constant one fails (exit 3), both as JSON too.
    good = score_table(tmp_path / "good", lambda s: np.clip(s + 0.002, 0, 1))
    code, out, _ = run("compare", "--name", NAME, "--tables", good, "--json", str(tmp_path / "good.json"))
    assert code == 0 and "verdict" in out and "PASS" in out, out
    figures = json.loads((tmp_path / "good.json").read_text())
    assert figures["passed"] and figures["pairs"] == 300 and figures["challenger"] == 2
    assert figures["challenger_error_rate"] == pytest.approx(1 / 301)
    bad = score_table(tmp_path / "bad", lambda s: np.ones_like(s))
    code, out, _ = run("compare", "--name", NAME, "--tables", bad, "--json", "-")
    assert code == 3 and not json.loads(out)["passed"] and any("rank" in f for f in json.loads(out)["failures"])
    assert run("compare", "--name", NAME, "--tables", good, "--since", "1h")[0] == 3  # nothing that recent

    # The `challenger` alias names the next rollout's version; a new challenger draws a new salt.
    assert run("promote", "--name", NAME, "--version", "3", "--alias", "challenger")[0] == 0
    code, out, _ = run("rollout", "set", "--name", NAME, "--shadow", "50")
    assert code == 0 and "challenger v3 (shadow 50 %, canary 0 %" in out and salt not in out
    code, out, _ = run("rollout", "stop", "--name", NAME, "--why", "enough")
    assert code == 0 and "no rollout" in out

    code, out, _ = run("promote", "--name", NAME, "--version", "2", "--alias", "champion", "--why", "won")
    assert code == 0 and "(was v1)" in out
    code, out, _ = run("rollback", "--name", NAME, "--why", "complaints")
    assert code == 0 and out.strip() == f"champion of {NAME}: v2 -> v1"

    code, out, _ = run("models", "--history", "--name", NAME)
    lines = out.strip().splitlines()
    assert [line.split()[2] for line in lines] == ["promote", "rollout_set", "rollout_set", "promote",
                                                   "rollout_set", "rollout_stop", "promote", "rollback"]
    assert all(line.split()[0].endswith("+00:00") and line.split()[3] == "tester" for line in lines)
    assert "v1 -> v2  why: won" in lines[-2] and "v2 -> v1  why: complaints" in lines[-1]
    assert "canary_percent=5.0" in lines[2]
    code, out, _ = run("models", "--history", "--json")
    events = [json.loads(line) for line in out.strip().splitlines()]
    assert events[-1] | {"at_ms": 0} == {"action": "rollback", "who": "tester", "from": 2, "to": 1,
                                         "why": "complaints", "alias": "champion", "model_name": NAME, "at_ms": 0}
