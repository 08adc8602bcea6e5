"""Rollouts in the running stream (real Tansu broker, Flink mini-cluster, MLflow registry), one job
through three phases: a canary of 30 % set mid-stream splits the served scores by version and
pairs every canary score with a champion shadow score; a rollback switches the served version
within two poll intervals; a bad challenger's canary is ended by the guardrail, with the reason in
the audit trail."""
from __future__ import annotations

import itertools
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from _models_fixtures import SMALL, built_bundle
from _stream_fixtures import MODEL, collect, produce, running_broker, running_stream, stream_config
from jobs.supervise import wait_until
from jobs.topic_io import file_upload, read_topic
from models.build import build_bundle
from udfs.features import content_sha256
from udfs.rollout import arm

pytestmark = pytest.mark.integration

POLL_MS = 1000  # stream_config's flink.model_poll_interval_ms


@pytest.fixture(scope="module")
def rollout_versions(stream_registry, model_data, tmp_path_factory):
    """{"faithful": v, "bad": v}: the champion's own bundle registered again (a challenger that
    agrees with it), and an xgboost trained on labels that are all positive but two per split
    (scores ~0.97 for every photo; its exports agree, so it passes parity)."""
    from models.registry import log_and_register

    config = stream_registry["config"]
    faithful = log_and_register(built_bundle("xgboost", model_data, tmp_path_factory), MODEL, config,
                                {"model_type": "xgboost"})
    positive = replace(model_data, splits={name: replace(split, y=(np.arange(len(split.y)) >= 2).astype(int))
                                           for name, split in model_data.splits.items()})
    bad_bundle = build_bundle("xgboost", positive, SMALL, tmp_path_factory.mktemp("bundle-positive") / "b")
    assert bad_bundle.parity["verdict"] == "passed", bad_bundle.parity
    bad = log_and_register(bad_bundle, MODEL, config, {"model_type": "xgboost"})
    return {"faithful": int(faithful.version), "bad": int(bad.version)}


def _variants(photos: list[str], out: Path, n: int) -> list[Path]:
    """`n` distinct contents from the corpus photos: each photo cropped by 1, 2, ... pixels."""
    from PIL import Image

    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        source, k = photos[i % len(photos)], i // len(photos) + 1
        with Image.open(source) as image:
            rgb = image.convert("RGB")
            path = out / f"v{i}.jpg"
            rgb.crop((0, 0, rgb.width - k, rgb.height)).save(path, quality=90)
        paths.append(path)
    return paths


def _records(bootstrap: str, topic: str) -> list[dict]:
    return [json.loads(v) for _, _, v in read_topic(bootstrap, topic, idle_s=1.0)]


def _send(bootstrap: str, config, paths, prefix: str) -> list[str]:
    return produce(bootstrap, config.kafka.topics.uploaded,
                   [(f"{prefix}{i}", file_upload(f"{prefix}{i}", str(p))) for i, p in enumerate(paths)])


def _served(scores: list[dict], refs: list[str]) -> dict[str, dict]:
    wanted = set(refs)
    return {s["upload_ref"]: s for s in scores if s["upload_ref"] in wanted}


def test_canary_split_rollback_and_guardrail_in_the_running_stream(stream_registry, rollout_versions, corpus_dir,
                                                                    corpus_features, tmp_path):
    from models.rollouts import history, promote, read_plan, rollback, set_rollout, stop_rollout

    registry = stream_registry["config"]
    v1, faithful, bad = stream_registry["v1"], rollout_versions["faithful"], rollout_versions["bad"]
    photos = sorted(corpus_features["photo_id"])
    contents = _variants(photos, tmp_path / "photos", 360)
    config = stream_config(tmp_path / "home", stream_registry, "rollout.guardrail_window=40",
                           roots=[corpus_dir, tmp_path / "photos"])
    topics = config.kafka.topics
    probes = itertools.count()
    try:
        with running_broker(config, "ephemeral") as bootstrap, running_stream(config) as job:
            log = Path(job["log"])

            def served_version() -> int:
                i = next(probes)
                (ref,) = _send(bootstrap, config, [contents[i % len(contents)]], f"probe{i}-")
                scores, _ = collect(config, bootstrap, {ref}, job_log=log)
                return _served(scores, [ref])[ref]["model_version"]

            assert served_version() == v1

            # 1. Canary 30 % mid-stream: served scores split by the plan's arms, every canary
            # content paired with a champion shadow score, no shadow score among the served.
            plan = set_rollout(registry, MODEL, challenger=faithful, canary_percent=30, why="test canary")
            # A new challenger serves once each subtask has polled the plan AND loaded its bundle
            # (slower on a loaded machine): wait until canary contents spread over both subtasks'
            # keys are all served by it.
            canary_probes = [p for p in contents if arm(content_sha256(Path(p).read_bytes()), plan) == "canary"][:8]

            def follows_plan() -> bool:
                i = next(probes)
                refs = _send(bootstrap, config, canary_probes, f"follow{i}-")
                scores, _ = collect(config, bootstrap, set(refs), job_log=log)
                return all(s["model_version"] == faithful for s in _served(scores, refs).values())

            wait_until(follows_plan, 120, 0, what="every subtask to serve the canary")
            refs = _send(bootstrap, config, contents, "canary-")
            scores, dlq = collect(config, bootstrap, set(refs), job_log=log)
            served = _served(scores, refs)
            assert set(served) == set(refs) and not dlq
            assert all(s["role"] == "served" for s in scores)
            for s in served.values():
                want = faithful if arm(s["content_sha256"], plan) == "canary" else v1
                assert s["model_version"] == want, s
            share = 100.0 * sum(s["model_version"] == faithful for s in served.values()) / len(served)
            print(f"canary share of served scores: {share:.1f} % (plan 30 %)")
            assert abs(share - 30) <= 8
            canary_refs = {r for r, s in served.items() if s["model_version"] == faithful}

            def shadow_pairs():
                shadow = [r for r in _records(bootstrap, topics.scores_shadow) if r.get("upload_ref") in canary_refs]
                return shadow if {r["upload_ref"] for r in shadow} == canary_refs else None

            shadow = wait_until(shadow_pairs, 60, 1.0, what="a champion shadow score of every canary content")
            assert all((r["role"], r["model_version"]) == ("shadow", v1) for r in shadow)

            # 2. Promote the challenger, then roll back mid-stream: served scores carry the previous
            # champion within two poll intervals.
            promote(registry, MODEL, faithful, why="test promote")
            wait_until(lambda: served_version() == faithful, 60, 0, what="the promoted champion to serve")
            time.sleep(2 * POLL_MS / 1000 + 1)
            started_ms = int(time.time() * 1000)
            assert rollback(registry, MODEL, why="test rollback") == (faithful, v1)
            stream = []
            while time.time() * 1000 < started_ms + 4 * POLL_MS:
                stream += _send(bootstrap, config, [contents[len(stream) % 72]], f"rollback{len(stream)}-")
                time.sleep(0.1)
            scores, _ = collect(config, bootstrap, set(stream), job_log=log)
            after = sorted(_served(scores, stream).values(), key=lambda s: s["scored_at_ms"])
            old = [s["scored_at_ms"] for s in after if s["model_version"] == faithful]
            switch_ms = max(old, default=started_ms) - started_ms
            print(f"rollback switch time: {switch_ms} ms (poll interval {POLL_MS} ms)")
            assert switch_ms <= 2 * POLL_MS and after[-1]["model_version"] == v1

            # 3. A bad challenger (scores ~0.97 for every photo) on a canary: the guardrail ends
            # the canary by itself and the audit trail says why.
            set_rollout(registry, MODEL, challenger=bad, shadow_percent=100, canary_percent=50, why="test bad")
            time.sleep(2 * POLL_MS / 1000 + 1)
            rounds = itertools.count()

            def canary_ended():
                refs = _send(bootstrap, config, contents[:120], f"bad{next(rounds)}-")
                collect(config, bootstrap, set(refs), job_log=log)
                return next((e for e in history(registry, MODEL) if e["action"] == "canary_ended"
                             and e["from"] == bad), None)

            event = wait_until(canary_ended, 180, 0, what="the guardrail to end the bad canary")
            print(f"guardrail: {event}")
            assert event["who"] == "guardrail" and event["to"] == v1
            assert any(k in event["why"] for k in ("mean |delta|", "flip share", "PSI", "rank correlation"))
            assert read_plan(registry, MODEL).canary_percent == 0
            time.sleep(2 * POLL_MS / 1000 + 1)
            refs = _send(bootstrap, config, contents[:60], "after-guardrail-")
            scores, _ = collect(config, bootstrap, set(refs), job_log=log)
            assert {s["model_version"] for s in _served(scores, refs).values()} == {v1}
    finally:
        stop_rollout(registry, MODEL, why="test cleanup")
        if read_plan(registry, MODEL).champion != v1:
            promote(registry, MODEL, v1, why="test cleanup")
