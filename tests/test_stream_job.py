"""The PyFlink job end to end on a real broker (Tansu) and Flink's mini-cluster: every upload ends
as a score or a DLQ record; duplicates are decoded once; the stream's scores equal the batch path's;
a crash restores from the checkpoint; a durable broker restart loses nothing; an alias change is
picked up without a restart."""
from __future__ import annotations

import itertools
import json
import os
import time
from collections import Counter
from pathlib import Path

import pytest

from _fake_store import FakeStore
from _stream_fixtures import MODEL, collect, kill_job, produce, running_broker, running_stream, stream_config
from jobs.supervise import wait_until
from jobs.topic_io import file_upload
from udfs.bundle import read_feature_schema
from udfs.features import content_sha256, extract_batch
from udfs.messages import encode_upload
from udfs.quarantine import REASON_CODES

pytestmark = pytest.mark.integration


def _uploads(paths, prefix="", claim=False):
    """Upload messages; `claim`: as `photoscore upload` sends them, with the content's sha256 (the
    job keys those in the JVM), else without (the job reads and hashes them before keying)."""
    if claim:
        return [(f"{prefix}{p}", file_upload(f"{prefix}{p}", p)) for p in paths]
    return [(f"{prefix}{p}", encode_upload(f"{prefix}{p}", Path(p).as_uri())) for p in paths]


def _expected_scores(features, bundle_dir, version):
    """{content_sha256: score} of the batch path: `features` (of the bundle's feature version)
    scored by its native export."""
    from udfs.scoring import score_frame
    from udfs.bundle import read_feature_schema
    from udfs.formats import load_scorer

    out = score_frame(features, load_scorer(bundle_dir, "native"), read_feature_schema(bundle_dir),
                      MODEL, version, "batch").scores
    return dict(zip(out["content_sha256"], out["score"]))


def test_stream_end_to_end_dedup_parity_crash_restore_and_hot_swap(
        stream_registry, corpus_dir, corpus_features, bad_inputs, tmp_path):
    from models.registry import promote

    photos = sorted(corpus_features["photo_id"])
    # What an upload must never make the job read (README "Trust model"), and the limits: photos up
    # to the largest corpus photo, messages up to an inline photo one byte larger than that.
    root, store = tmp_path / "root", FakeStore(tmp_path / "s3")
    root.mkdir()
    os.mkfifo(root / "fifo.jpg")
    (root / "escape.jpg").symlink_to("/etc/passwd")
    (tmp_path / "outside.jpg").write_bytes(b"outside")
    largest = max(Path(p).stat().st_size for p in [*photos, *bad_inputs])
    too_big = ("big", encode_upload("big", inline=b"\0" * (largest + 1)))
    refused = {"zero": ("/dev/zero", "uri_not_allowed"), "passwd": ("/etc/passwd", "uri_not_allowed"),
               "environ": ("file:///proc/self/environ", "uri_not_allowed"),
               "escape": (str(root / "escape.jpg"), "uri_not_allowed"),
               "dots": (f"{root}/../outside.jpg", "uri_not_allowed"),
               "s3": ("s3://elsewhere/a.jpg", "uri_not_allowed"), "fifo": (str(root / "fifo.jpg"), "not_a_regular_file")}
    config = stream_config(tmp_path / "home", stream_registry, f"features.max_file_bytes={largest}",
                           f"kafka.max_message_bytes={len(too_big[1])}", "storage.read_backoff_s=0.1",
                           roots=[corpus_dir, root, "s3://flaky/"], store=store)
    topic = config.kafka.topics.uploaded
    with running_broker(config, "ephemeral") as bootstrap, running_stream(config) as job:
        log = Path(job["log"])
        # 1. N uploads: photos (claiming their content hash), broken files, malformed JSON, missing
        # fields, unreadable URIs (with and without a claim), URIs outside the roots, a FIFO, an
        # inline photo and a message over their limits, duplicates.
        messages = _uploads(photos, claim=True) + _uploads(sorted(bad_inputs))
        messages += [(pid, encode_upload(pid, uri)) for pid, (uri, _) in refused.items()]
        messages += [too_big, ("huge", b" " * (len(too_big[1]) + 1))]
        messages += [("bad1", b"{not json"), ("bad2", b"\xff\xfe binary"), ("bad3", b"[]"),
                     ("miss1", json.dumps({"schema": 1, "photo_id": "m1", "uploaded_at_ms": 1}).encode()),
                     ("miss2", json.dumps({"schema": 1, "uri": "/x", "uploaded_at_ms": 1}).encode()),
                     ("gone", encode_upload("gone", (root / "nope.jpg").as_uri())),
                     ("gone2", encode_upload("gone2", (root / "nope.jpg").as_uri(), content_sha256="0" * 64))]
        # Duplicates without a claim (hashed before keying) meet the claimed originals' state; a
        # wrong claim is scored from its own bytes and cached nowhere.
        dups = [(f"dup{i}", encode_upload(f"dup{i}", inline=Path(p).read_bytes())) for i, p in enumerate(photos[:8])]
        sha = {p: content_sha256(Path(p).read_bytes()) for p in photos[:2]}
        liar = ("liar", encode_upload("liar", Path(photos[0]).as_uri(), content_sha256=sha[photos[1]]))
        refs = produce(bootstrap, topic, messages)
        collect(config, bootstrap, set(refs), job_log=log)  # the originals are scored and cached first
        dup_refs = produce(bootstrap, topic, [liar, *dups])  # after the originals: their contents are cached
        liar_ref, dup_refs = dup_refs[0], dup_refs[1:]
        scores, dlq = collect(config, bootstrap, set(refs) | {liar_ref} | set(dup_refs), job_log=log)
        n = len(refs) + len(dup_refs) + 1
        by_ref = {s["upload_ref"]: s for s in scores} | {d["source_ref"]: d for d in dlq}
        assert len({*refs, liar_ref, *dup_refs}) == n and set(by_ref) >= {*refs, liar_ref, *dup_refs}
        assert len({s["upload_ref"] for s in scores}) + len({d["source_ref"] for d in dlq}) == n
        assert all(d["reason_code"] in REASON_CODES and d["detail"] for d in dlq)
        reasons = {by_ref[r]["photo_id"] if by_ref[r].get("photo_id") else r: by_ref[r]["reason_code"]
                   for r in refs[len(photos):]}
        for path, code in bad_inputs.items():
            assert reasons[Path(path).as_posix()] == code
        assert reasons["gone"] == reasons["gone2"] == "unreadable_uri" and reasons["m1"] == "missing_field"
        assert {pid: reasons[pid] for pid in refused} == {pid: code for pid, (_, code) in refused.items()}
        assert reasons["big"] == "file_too_large" and "message_too_large" in reasons.values()
        assert Counter(reasons.values())["malformed_message"] >= 3
        # Duplicates: one decode per content (only the first score of a content is not from cache).
        fresh = Counter(s["content_sha256"] for s in scores if not s["from_cache"] and s["upload_ref"] != liar_ref)
        assert max(fresh.values()) == 1
        dup_scores = [by_ref[r] for r in dup_refs]
        assert all(s["from_cache"] for s in dup_scores)
        assert by_ref[liar_ref]["content_sha256"] == sha[photos[0]] and not by_ref[liar_ref]["from_cache"]
        # Parity: the stream's scores are the batch path's, bit for bit, same version and format.
        expected = _expected_scores(corpus_features, stream_registry["bundles"][stream_registry["v1"]],
                                    stream_registry["v1"])
        for s in scores:
            assert s["score"] == expected[s["content_sha256"]] and s["model_version"] == stream_registry["v1"]
            assert (s["model_name"], s["export_format"], s["source"]) == (MODEL, "native", "stream")

        # 2. Crash mid-stream and restore from the checkpoint: nothing lost.
        time.sleep(3)  # at least one checkpoint after the records above
        crash = [(f"c{i}", encode_upload(f"c{i}", inline=Path(p).read_bytes())) for i, p in enumerate(photos[8:40])]
        # ... and photos in an object store that fails their first reads (all of a reader's
        # attempts): the job restarts from its checkpoint and reads them again, never dead-letters.
        store.set_flaky("flaky", config.storage.read_attempts)
        flaky = [(f"f{i}", encode_upload(f"f{i}", store.put(f"s3://flaky/{Path(p).name}", Path(p).read_bytes())))
                 for i, p in enumerate(photos[40:42])]
        crash_refs = produce(bootstrap, topic, crash + flaky)
        time.sleep(1.0)
        kill_job(config)
        from jobs.stream_supervisor import latest_checkpoint, start_stream
        assert latest_checkpoint(config) is not None
        restarted = start_stream(config)
        assert restarted["restore"]
        scores, dlq = collect(config, bootstrap, set(crash_refs), job_log=log)
        crash_scores = [s for s in scores if s["upload_ref"] in set(crash_refs)]
        assert {s["upload_ref"] for s in crash_scores} == set(crash_refs)
        assert not {d["source_ref"] for d in dlq} & set(crash_refs)
        assert all(store.attempts(f"s3://flaky/{Path(p).name}") > config.storage.read_attempts for p in photos[40:42])
        # Replays after the restore carry the same score identity and value.
        ident = {}
        for s in crash_scores:
            key = (s["upload_ref"], s["content_sha256"], s["model_name"], s["model_version"])
            assert ident.setdefault(key, s["score"]) == s["score"]

        # 3. Hot swap: promote v2; later uploads are scored by v2 without a restart.
        promote(stream_registry["config"], MODEL, str(stream_registry["v2"]), "champion")
        try:
            probes = itertools.count()

            def scored_by(version: int) -> bool:
                i = next(probes)
                p = photos[40 + i % 30]
                (ref,) = produce(bootstrap, topic, [(f"s{i}", encode_upload(f"s{i}", Path(p).as_uri()))])
                scores, _ = collect(config, bootstrap, {ref}, job_log=log)
                return next(s for s in scores if s["upload_ref"] == ref)["model_version"] == version

            wait_until(lambda: scored_by(stream_registry["v2"]), 90, 0, what="the job to pick up the new champion")
            rounds = itertools.count()

            def all_scored_by(version: int, prefix: str) -> tuple[list[dict], list[dict]] | None:
                # Each parallel Score subtask polls the alias on its own, in the background: one that
                # has not swapped yet scores with the previous model, so the photos are sent again
                # (as new uploads) until every one is scored by `version`.
                later = produce(bootstrap, topic, _uploads(photos[:10], prefix=f"{prefix}-{next(rounds)}-"))
                scores, _ = collect(config, bootstrap, set(later), job_log=log)
                after = [s for s in scores if s["upload_ref"] in set(later)]
                return (after, scores) if after and all(s["model_version"] == version for s in after) else None

            after, scores = wait_until(lambda: all_scored_by(stream_registry["v2"], "after"), 90, 0,
                                       what="every subtask to score with the new champion")
            # Each content is rescored by v2 once (from its cached features); repeats are cache hits.
            v2 = [s for s in scores if s["model_version"] == stream_registry["v2"]]
            fresh = Counter(s["content_sha256"] for s in v2 if not s["from_cache"])
            assert {s["content_sha256"] for s in after} <= set(fresh) and set(fresh.values()) == {1}

            # 4. The alias moves to a model of another feature version: from then on the job
            # computes that version, and its scores are the batch path's on that version's features.
            old = stream_registry["old"]
            promote(stream_registry["config"], MODEL, str(old), "champion")
            after, _ = wait_until(lambda: all_scored_by(old, "old-features"), 90, 0,
                                  what="the job to pick up the older-features champion")
            old_version = read_feature_schema(stream_registry["bundles"][old]).feature_version
            expected = _expected_scores(extract_batch(photos[:10], [Path(p).read_bytes() for p in photos[:10]],
                                                      version=old_version).features,
                                        stream_registry["bundles"][old], old)
            assert old_version != read_feature_schema(stream_registry["bundles"][stream_registry["v2"]]).feature_version
            assert len(after) == 10
            for s in after:
                assert (s["model_version"], s["feature_version"]) == (old, old_version)
                assert s["score"] == expected[s["content_sha256"]]
        finally:
            promote(stream_registry["config"], MODEL, str(stream_registry["v1"]), "champion")


def test_durable_broker_restart_mid_stream_loses_nothing(stream_registry, corpus_dir, corpus_features, tmp_path):
    from jobs.broker import start_broker, stop_broker

    config = stream_config(tmp_path / "home", stream_registry, roots=[corpus_dir])
    topic = config.kafka.topics.uploaded
    photos = sorted(corpus_features["photo_id"])
    with running_broker(config, "durable") as bootstrap, running_stream(config) as job:
        log = Path(job["log"])
        before = produce(bootstrap, topic, _uploads(photos[:30]))
        collect(config, bootstrap, set(before[:5]), job_log=log)  # the job is consuming
        stop_broker(config)
        state = start_broker(config, mode="durable")
        assert state["bootstrap"] == bootstrap  # same address: clients reconnect
        after = produce(bootstrap, topic, _uploads(photos[30:60]))
        scores, dlq = collect(config, bootstrap, set(before) | set(after), timeout_s=300, job_log=log)
        assert not dlq
        assert {s["upload_ref"] for s in scores} == set(before) | set(after)
        # Messages from before the restart are still in the (durable) topic.
        from jobs.topic_io import read_topic
        assert len(list(read_topic(bootstrap, topic, idle_s=1.0))) >= 60
