"""The streaming part of `make demo`: broker, topics, the local S3 photo store, the job, uploads
(copied into the store and announced by their s3:// URIs, as an uploading service does), scores and
DLQ entries arriving, a challenger promoted and the version change seen in the running job, clean
stop.

`run_stream_demo(settings, corpus_dir)` expects a registered champion (the demo's earlier steps
train and promote one) and, for the swap, a second version it can promote; without one it
says so and skips that step.
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
    from models.registry import client, list_versions, promote

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
            _say("only one model version registered: skipping the hot-swap step")
            return summary
        # The version holding the `challenger` alias if there is one, else the newest other one.
        challenger = max(versions, key=lambda r: ("challenger" in r["aliases"], r["version"]))["version"]
        promote(settings, name, str(challenger), alias)
        _say(f"promoted version {challenger} to @{alias} (was {champion}); uploading again ...")

        def scored_by_challenger() -> list[dict]:
            again = _send(bootstrap, topic, photos[:5], uris[:5], f"swap{int(time.time())}-")
            got, _ = _wait_records(settings, bootstrap, set(again), 60)
            return [s for s in got if s["model_version"] == challenger]

        try:
            swapped = wait_until(scored_by_challenger, timeout_s, 0, what=f"scores by version {challenger}")
        except WaitTimeout:
            swapped = []
        for s in swapped[:5]:
            _say(f"  {Path(s['photo_id']).name:<24} score={s['score']:.4f} model={s['model_name']}/{s['model_version']}")
        summary.update(swapped_to=challenger if swapped else None, previous=champion)
        promote(settings, name, str(champion), alias)  # leave the registry as the demo found it
        return summary
    finally:
        stop_stream(settings)
        if not external_bootstrap(settings):
            stop_broker(settings)
        _say("stream and broker stopped")
