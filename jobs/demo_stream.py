"""The streaming part of `make demo`: broker, topics, the local S3 photo store, the job, uploads
(copied into the store and announced by their s3:// URIs, as an uploading service does), scores and
DLQ entries arriving, then a rollout on the running job - the challenger in shadow, a 30 % canary
(served scores split by version), promoted, rolled back (the switch time measured) - and a clean
stop.

`run_stream_demo(settings, corpus_dir)` expects a registered champion (the demo's earlier steps
train and promote one) and, for the rollout, a second version; without one it says so and skips
those steps.
"""
from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path


def _say(msg: str) -> None:
    print(f"[stream] {msg}", flush=True)


def _wait_records(settings, bootstrap: str, refs: set[str], timeout_s: float) -> tuple[list[dict], list[dict]]:
    """The score and DLQ records of `refs`, once all have one or when `timeout_s` has passed (the
    demo shows what arrived either way)."""
    from jobs.supervise import WaitTimeout, wait_until
    from jobs.topic_io import read_topic

    got: dict[str, list[dict]] = {"scores": [], "dlq": []}

    def all_arrived() -> bool:
        for key in got:
            got[key] = [json.loads(v) for _, _, v in read_topic(bootstrap, getattr(settings.kafka.topics, key), idle_s=1.0)]
        return refs <= {s["upload_ref"] for s in got["scores"]} | {d["source_ref"] for d in got["dlq"]}

    try:
        wait_until(all_arrived, timeout_s, 1.0, what=f"records of {len(refs)} uploads")
    except WaitTimeout:
        pass
    return ([s for s in got["scores"] if s["upload_ref"] in refs], [d for d in got["dlq"] if d["source_ref"] in refs])


def _served_and_shadow(settings, bootstrap: str, refs: set[str]) -> tuple[list[dict], list[dict]]:
    """The served scores of `refs` (photos.scores) and the shadow scores of the same uploads
    (photos.scores.shadow), read once the served ones arrived."""
    from jobs.topic_io import read_topic

    served, _ = _wait_records(settings, bootstrap, refs, 60)
    shadow = [json.loads(v) for _, _, v in read_topic(bootstrap, settings.kafka.topics.scores_shadow, idle_s=1.0)]
    return served, [s for s in shadow if s.get("upload_ref") in refs and "score" in s]


def _rollout_steps(settings, bootstrap: str, name: str, champion: int, challenger: int, photos: list[Path],
                   uris: list[str], timeout_s: float) -> dict:
    """Shadow -> canary 30 % -> promote -> rollback on the running job, each step's effect read back
    from the topics; the registry is left as it was found (champion, no rollout)."""
    from collections import Counter

    from jobs.supervise import WaitTimeout, wait_until
    from models import rollouts

    topic = settings.kafka.topics.uploaded
    why = "make demo"

    def upload_until(tag: str, done) -> tuple[list[dict], list[dict]]:
        """Upload the photos again (new photo ids, same contents) until `done(served, shadow)`: the
        job follows the registry within its poll interval."""
        def attempt():
            refs = _send(bootstrap, topic, photos, uris[:len(photos)], f"{tag}{int(time.time() * 1000)}-")
            served, shadow = _served_and_shadow(settings, bootstrap, set(refs))
            return (served, shadow) if done(served, shadow) else None
        try:
            return wait_until(attempt, timeout_s, 0, what=f"the {tag.rstrip('-')} step's scores")
        except WaitTimeout:
            return [], []

    try:
        rollouts.promote(settings, name, challenger, "challenger", why=why)
        rollouts.set_rollout(settings, name, shadow_percent=100, canary_percent=0, why=why)
        _say(f"rollout: v{challenger} in shadow on 100 % of contents (champion v{champion} serves all)")
        served, shadow = upload_until("shadow-", lambda served, shadow: len(shadow) >= len(served) > 0)
        _say(f"  served: {dict(Counter(s['model_version'] for s in served))} by version; "
             f"shadow: {dict(Counter(s['model_version'] for s in shadow))} on {settings.kafka.topics.scores_shadow}")

        plan = rollouts.set_rollout(settings, name, canary_percent=30, why=why)
        _say(f"rollout: canary 30 % (salt {plan.salt}): v{challenger} serves 30 % of contents, "
             f"v{champion} still scores them as shadow")
        served, shadow = upload_until("canary-", lambda served, shadow: any(
            s["model_version"] == challenger for s in served))
        split = Counter(s["model_version"] for s in served)
        paired = {s["content_sha256"] for s in shadow if s["model_version"] == champion}
        canary = [s for s in served if s["model_version"] == challenger]
        _say(f"  served split by version: " + ", ".join(
            f"v{v} {100.0 * n / max(1, len(served)):.0f} %" for v, n in sorted(split.items()))
            + f"; canary contents with a champion shadow score: {sum(s['content_sha256'] in paired for s in canary)}"
            f"/{len(canary)}")

        rollouts.promote(settings, name, challenger, "champion", why=why)
        _say(f"promoted v{challenger} to champion (the rollout ends: it serves every content)")
        upload_until("promoted-", lambda served, shadow: served and all(s["model_version"] == challenger
                                                                         for s in served))
        seen: list[dict] = []

        def all_served_by(version: int):
            def done(served, shadow):
                seen.extend(served)
                return served and all(s["model_version"] == version for s in served)
            return done

        t0_ms = int(time.time() * 1000)
        was, now = rollouts.rollback(settings, name, why=why)
        upload_until("rollback-", all_served_by(now))
        # Scores carry when they were made: the job's switch is the last score by the old champion
        # after the call (upload and topic round trips excluded).
        last_old = max((s["scored_at_ms"] for s in seen if s["model_version"] == was and s["scored_at_ms"] >= t0_ms),
                       default=None)
        first_new = min((s["scored_at_ms"] for s in seen if s["model_version"] == now), default=t0_ms)
        switch_s = ((last_old if last_old is not None else first_new) - t0_ms) / 1000.0
        _say(f"rollback: champion v{was} -> v{now}; the job served v{now} from {max(0.0, switch_s):.1f} s after the "
             f"call (poll interval {settings.flink.model_poll_interval_ms / 1000:g} s; "
             f"{'no' if last_old is None else 'last'} score by v{was} after it)")
        for event in rollouts.history(settings, name)[-5:]:
            alias = f" @{event['alias']}" if event.get("alias") else ""
            _say(f"  audit: {event['action']:<12}{alias:<12} v{event['from']} -> v{event['to']} by {event['who']} "
                 f"({event['why']})")
        return {"served_split": dict(split), "rollback_switch_s": round(max(0.0, switch_s), 1)}
    finally:
        # Leave the registry as the demo found it: the original champion, no rollout.
        rollouts.stop_rollout(settings, name, why="make demo: done")
        if rollouts.read_plan(settings, name).champion != champion:
            rollouts.promote(settings, name, champion, "champion", why="make demo: done")


def _send(bootstrap: str, topic: str, paths: list[Path], uris: list[str], tag: str) -> list[str]:
    from jobs.topic_io import upload_files

    return upload_files(bootstrap, topic, paths, photo_ids=[f"{tag}{p.name}" for p in paths], uris=uris)


@contextlib.contextmanager
def _s3_store(settings):
    """The local S3 photo store, its client variables in this process' environment (the job and
    its workers inherit them) and its demo prefix among the photo roots; always stopped."""
    from jobs.s3_store import client_env, start_s3_store, stop_s3_store

    saved = dict(os.environ)
    try:
        state = start_s3_store(settings)
        os.environ.update(client_env(settings))
        prefix = f"s3://{state['bucket']}/demo/"
        _say(f"S3 photo store up: {state['endpoint']}, photos under {prefix} (`photoscore s3 status` prints its variables)")
        s3 = {**settings.storage.s3.model_dump(), "endpoint_url": state["endpoint"], "region": state["region"]}
        yield settings.updated(storage={"s3": s3, "photo_roots": [*settings.storage.photo_roots, prefix]}), prefix
    finally:
        stop_s3_store(settings)
        os.environ.clear()
        os.environ.update(saved)


def run_stream_demo(settings, corpus_dir: Path | str, timeout_s: float = 300.0) -> dict:
    """Run the stream demo on `corpus_dir` (photos/ and broken/); returns the figures it showed.

    Starts and always stops the embedded broker (unless kafka.bootstrap points elsewhere), the local
    S3 photo store and the job.
    """
    with _s3_store(settings) as (settings, prefix):
        return _run(settings, Path(corpus_dir), prefix, timeout_s)


def _run(settings, corpus_dir: Path, prefix: str, timeout_s: float) -> dict:
    from jobs.broker import external_bootstrap, start_broker, stop_broker
    from jobs.kafka_admin import configure_topics, topic_specs
    from jobs.photo_upload import copy_to_store, object_uris
    from jobs.stream_supervisor import start_stream, stop_stream
    from jobs.supervise import WaitTimeout, wait_until
    from models.registry import client, list_versions

    name, alias = settings.mlflow.model_name, settings.mlflow.alias
    summary: dict = {}
    try:
        if external_bootstrap(settings):
            bootstrap = external_bootstrap(settings)
            _say(f"using the Kafka cluster at {bootstrap}")
        else:
            state = start_broker(settings)
            bootstrap = state["bootstrap"]
            _say(f"broker up: bootstrap={bootstrap} mode={state['mode']}")
        for line in configure_topics(bootstrap, topic_specs(settings.kafka)):
            _say(f"topic {line}")
        # A fresh job: the source resumes from the group offsets the broker holds (none on a new
        # broker), never from an older run's checkpoint whose offsets may belong to another broker.
        job = start_stream(settings, restore=False)
        _say(f"stream job started ({job['mode']}), log {job['log']}")
        topic = settings.kafka.topics.uploaded
        photos = sorted((corpus_dir / "photos").glob("*"))
        broken = sorted((corpus_dir / "broken").glob("*"))
        files = photos + broken
        uris = object_uris([str(p) for p in files], [str(corpus_dir)], prefix)
        copy_to_store([str(p) for p in files], uris, settings.storage)
        _say(f"copied {len(files)} photos into the local S3 store under {prefix}")
        t0 = time.time()
        refs = _send(bootstrap, topic, files, uris, "demo-")
        _say(f"announced {len(refs)} s3:// uploads ({len(broken)} of them broken)")
        scores, dlq = _wait_records(settings, bootstrap, set(refs), timeout_s)
        _say(f"{len(scores)} scores and {len(dlq)} DLQ records in {time.time() - t0:.1f} s; a few scores:")
        for s in scores[:5]:
            _say(f"  {Path(s['photo_id']).name:<24} score={s['score']:.4f} "
                 f"model={s['model_name']}/{s['model_version']} ({s['export_format']})")
        for d in dlq:
            _say(f"  DLQ {Path(str(d['photo_id'])).name:<24} {d['stage']}/{d['reason_code']}: {d['detail'][:60]}")
        summary.update(uploaded=len(refs), scored=len({s['upload_ref'] for s in scores}),
                       dead_lettered=len({d['source_ref'] for d in dlq}))
        champion = int(client(settings).get_model_version_by_alias(name, alias).version)
        versions = [r for r in list_versions(settings, name) if r["version"] != champion and r["parity"] == "passed"]
        if not versions:
            _say("only one model version registered: skipping the rollout steps")
            return summary
        # The version holding the `challenger` alias if there is one, else the newest other one.
        challenger = max(versions, key=lambda r: ("challenger" in r["aliases"], r["version"]))["version"]
        summary.update(_rollout_steps(settings, bootstrap, name, champion, challenger, photos, uris, timeout_s))
        return summary
    finally:
        stop_stream(settings)
        if not external_bootstrap(settings):
            stop_broker(settings)
        _say("stream and broker stopped")
