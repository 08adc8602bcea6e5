"""The stream's pure functions (udfs/stream_scoring.py) on the real corpus and a real bundle:
stream features and scores equal the batch path's, the content cache, the atomic model swap."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from _models_fixtures import built_bundle
from _photo_fixtures import settings_for
from udfs.scoring import score_frame
from udfs.bundle import read_feature_schema
from udfs.decode import DecodeLimits
from udfs.features import FEATURE_NAMES, FEATURE_VERSION
from udfs.messages import encode_upload
from udfs.formats import load_scorer
from udfs.errors import TransientReadError
from udfs.rollout import RolloutPlan
from udfs.stream_models import RolloutHolder, ServingSet, load_model
from udfs.stream_scoring import DLQ, SCORES, prepare, process_keyed, process_message, upload_intake

LIMITS = DecodeLimits()


@pytest.fixture(scope="module")
def xgb(model_data, tmp_path_factory):
    return built_bundle("xgboost", model_data, tmp_path_factory)


@pytest.fixture(scope="module")
def logreg(model_data, tmp_path_factory):
    return built_bundle("logreg", model_data, tmp_path_factory)


@pytest.fixture(scope="module")
def intake(corpus_dir):
    """What uploads may make the stream read: photos under the corpus, messages up to 16 MiB."""
    return upload_intake(settings_for(corpus_dir, "s3://uploads/ok/"))


def test_stream_features_and_scores_equal_batch(corpus_dir, corpus_features, xgb, intake):
    """The stream path, message by message, gives the batch path's features and scores, bit for bit."""
    model = load_model("m", 1, xgb.bundle_dir, "native")
    expected = score_frame(corpus_features, load_scorer(xgb.bundle_dir, "native"),
                           read_feature_schema(xgb.bundle_dir), "m", 1, "batch").scores
    by_sha = dict(zip(expected["content_sha256"], expected["score"]))
    feats = corpus_features.set_index("content_sha256")
    cache: dict = {}
    for i, path in enumerate(corpus_features["photo_id"]):
        out = process_message(encode_upload(path, Path(path).as_uri(), 1), f"t/0/{i}", model, cache, LIMITS, intake)
        (kind, payload), = out.records
        rec = json.loads(payload)
        assert kind == SCORES and rec["model_version"] == 1 and rec["source"] == "stream"
        assert rec["score"] == by_sha[rec["content_sha256"]]
        row = feats.loc[rec["content_sha256"]]
        row = row.iloc[0] if row.ndim == 2 else row
        np.testing.assert_array_equal(np.asarray(out.cache.features[FEATURE_VERSION].values, np.float32),
                                      row[list(FEATURE_NAMES)].to_numpy(np.float32))


def test_duplicate_content_is_not_decoded_again_and_swap_rescores_from_cached_features(corpus_features, xgb, logreg,
                                                                                       intake):
    path = corpus_features["photo_id"].iloc[0]
    data = Path(path).read_bytes()
    v1 = load_model("m", 1, xgb.bundle_dir, "native")
    v2 = load_model("m", 2, logreg.bundle_dir, "onnx")
    cache: dict = {}
    first = process_message(encode_upload("a", Path(path).as_uri(), 1), "t/0/0", v1, cache, LIMITS, intake)
    again = process_message(encode_upload("b", inline=data), "t/0/1", v1, cache, LIMITS, intake)
    assert first.decoded and not again.decoded
    r1, r2 = (json.loads(o.records[0][1]) for o in (first, again))
    assert (r1["from_cache"], r2["from_cache"]) == (False, True)
    assert r2["photo_id"] == "b" and r2["score"] == r1["score"] and r2["content_sha256"] == r1["content_sha256"]
    swapped = process_message(encode_upload("c", inline=data), "t/0/2", v2, cache, LIMITS, intake)
    r3 = json.loads(swapped.records[0][1])
    assert not swapped.decoded and r3["from_cache"] is False
    assert (r3["model_version"], r3["export_format"]) == (2, "onnx")
    X = np.asarray([cache[r1["content_sha256"]].features[FEATURE_VERSION].values], np.float32)
    assert r3["score"] == float(load_scorer(logreg.bundle_dir, "onnx").score(X)[0])


def test_a_wrong_content_claim_is_scored_from_its_bytes_and_never_cached(corpus_features, xgb, intake):
    """The job keys a claimed message by its claim; the keyed step trusts only the bytes it reads."""
    a, b = corpus_features["photo_id"].iloc[:2]
    model = load_model("m", 1, xgb.bundle_dir, "native")
    photo_a, _ = prepare(encode_upload("a", Path(a).as_uri(), 1), "t/0/0", LIMITS, intake)
    photo_b, _ = prepare(encode_upload("b", Path(b).as_uri(), 1), "t/0/1", LIMITS, intake)
    model = [ServingSet.alone(model)]
    honest = process_keyed(photo_b, photo_b.content_sha256, model, None, LIMITS)
    assert honest.decoded and honest.cache.features[FEATURE_VERSION].content_sha256 == photo_b.content_sha256
    # A's bytes routed under B's key (a lying claim): B's entry is neither used nor replaced.
    liar = process_keyed(photo_a, photo_b.content_sha256, model, honest.cache, LIMITS)
    rec = json.loads(liar.records[0][1])
    assert liar.decoded and liar.cache is None
    assert rec["content_sha256"] == photo_a.content_sha256 and rec["from_cache"] is False
    again = process_keyed(photo_b, photo_b.content_sha256, model, honest.cache, LIMITS)
    assert not again.decoded and json.loads(again.records[0][1])["from_cache"] is True


def test_failures_become_dlq_records_with_the_source_ref(bad_inputs, corpus_dir, corpus_features, xgb, tmp_path,
                                                         fake_store):
    import os

    model = load_model("m", 1, xgb.bundle_dir, "native")
    root = tmp_path / "root"
    root.mkdir()
    intake = upload_intake(settings_for(corpus_dir, root, "s3://uploads/ok/"))
    os.mkfifo(root / "fifo.jpg")
    (root / "escape.jpg").symlink_to("/etc/passwd")
    (tmp_path / "outside.jpg").write_bytes(b"outside")
    good = Path(corpus_features["photo_id"].iloc[0])
    fake_store.put("s3://uploads/ok/a.jpg", good.read_bytes())
    limits = DecodeLimits(max_file_bytes=1 << 20)
    over = limits.max_file_bytes + 1
    cases = [(b"{oops", "malformed_message"), (json.dumps({"schema": 1, "photo_id": "x"}).encode(), "missing_field"),
             (encode_upload("gone", (root / "missing.jpg").as_uri(), 1), "unreadable_uri"),
             (encode_upload("zero", "/dev/zero", 1), "uri_not_allowed"),
             (encode_upload("passwd", "/etc/passwd", 1), "uri_not_allowed"),
             (encode_upload("environ", "file:///proc/self/environ", 1), "uri_not_allowed"),
             (encode_upload("esc", str(root / "escape.jpg"), 1), "uri_not_allowed"),
             (encode_upload("dots", f"{root}/../outside.jpg", 1), "uri_not_allowed"),
             (encode_upload("s3", "s3://uploads/private/a.jpg", 1), "uri_not_allowed"),
             (encode_upload("s3gone", "s3://uploads/ok/gone.jpg", 1), "unreadable_uri"),
             (encode_upload("fifo", str(root / "fifo.jpg"), 1), "not_a_regular_file"),
             (encode_upload("dir", str(root), 1), "not_a_regular_file"),
             # The inline size comes from the encoded length: "A" * n is valid base64, never decoded.
             (json.dumps({"schema": 1, "photo_id": "big", "uploaded_at_ms": 1,
                          "inline_b64": "A" * (-(-over // 3) * 4)}).encode(), "file_too_large"),
             (b"{" + b" " * (16 << 20) + b"}", "message_too_large")]
    cases += [(encode_upload(p, Path(p).as_uri(), 1), code) for p, code in bad_inputs.items()]
    for i, (raw, code) in enumerate(cases):
        out = process_message(raw, f"photos.uploaded/1/{i}", model, {}, limits, intake)
        (kind, payload), = out.records
        rec = json.loads(payload)
        assert kind == DLQ and rec["reason_code"] == code, (raw[:80], rec)
        assert rec["source_ref"] == f"photos.uploaded/1/{i}"
    # The next photos are scored, from a path and from the object store.
    for uri in (good.as_uri(), "s3://uploads/ok/a.jpg"):
        out = process_message(encode_upload("ok", uri, 1), "t/0/9", model, {}, LIMITS, intake)
        assert out.records[0][0] == SCORES
    # No model loaded yet: a DLQ record, never an exception.
    out = process_message(encode_upload("p", inline=Path(next(iter(bad_inputs))).read_bytes()), "t/0/9", None, {},
                          LIMITS, intake)
    assert out.records[0][0] == DLQ


def test_an_unreachable_store_raises_and_is_never_dead_lettered(xgb, fake_store):
    """The stream job lets the error fail the task: Flink restarts from the checkpoint and reads again."""
    model = load_model("m", 1, xgb.bundle_dir, "native")
    intake = upload_intake(settings_for("s3://uploads/", read_attempts=2, read_backoff_s=0))
    fake_store.put("s3://uploads/a.jpg", b"x")
    fake_store.set_down("uploads")
    with pytest.raises(TransientReadError):
        process_message(encode_upload("a", "s3://uploads/a.jpg", 1), "t/0/0", model, {}, LIMITS, intake)
    assert fake_store.attempts("s3://uploads/a.jpg") == 2


def test_rollout_holder_follows_the_plan_reuses_loaded_versions_and_survives_registry_errors(xgb, logreg):
    bundles = {1: xgb.bundle_dir, 2: logreg.bundle_dir}
    state = {"plan": RolloutPlan("m", 1), "fail": False, "resolves": 0}

    def read_plan():
        if state["fail"]:
            raise ConnectionError("registry down")
        return state["plan"]

    def resolve(v):
        state["resolves"] += 1
        return "m", v, bundles[v]

    holder = RolloutHolder("m", read_plan, resolve, "native", poll_interval_s=0.0)
    assert holder.current() is None
    first = holder.refresh()
    assert set(first.models) == {1} and holder.refresh() is first and state["resolves"] == 1
    state["fail"] = True
    assert holder.refresh() is first and "registry down" in holder.last_error
    # A rollout of v2: v1 stays loaded (the same object), v2 is loaded once.
    state.update(fail=False, plan=RolloutPlan("m", 1, 2, shadow_percent=50, salt="s"))
    second = holder.refresh()
    assert set(second.models) == {1, 2} and second.models[1] is first.models[1] and state["resolves"] == 2
    assert second.plan is state["plan"] and holder.swaps == 1 and holder.last_error is None
    # The canary grows: same versions, a new plan, nothing loaded again.
    state["plan"] = RolloutPlan("m", 1, 2, shadow_percent=50, canary_percent=30, salt="s")
    third = holder.refresh()
    assert third.plan.canary_percent == 30 and third.models == second.models and state["resolves"] == 2
    # v2 promoted alone: v1 leaves the set but stays warm, so rolling back to it loads nothing.
    state["plan"] = RolloutPlan("m", 2)
    assert set(holder.refresh().models) == {2} and state["resolves"] == 2
    state["plan"] = RolloutPlan("m", 1)
    back = holder.refresh()
    assert set(back.models) == {1} and back.models[1] is first.models[1] and state["resolves"] == 2


def test_rollout_holder_polls_in_the_background_idle_or_not(xgb, logreg):
    """The job's subtasks poll on a timer: a plan change reaches one that receives no photo."""
    from jobs.supervise import wait_until

    plans = {"now": RolloutPlan("m", 1)}
    bundles = {1: xgb.bundle_dir, 2: logreg.bundle_dir}
    holder = RolloutHolder("m", lambda: plans["now"], lambda v: ("m", v, bundles[v]), "native", poll_interval_s=0.05)
    holder.refresh()
    holder.start()
    try:
        plans["now"] = RolloutPlan("m", 2)
        wait_until(lambda: holder.current().plan.champion == 2, 10, 0.01, what="the background poll")
    finally:
        holder.stop()
    assert set(holder.current().models) == {2}
