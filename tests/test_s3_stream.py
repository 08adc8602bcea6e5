"""The stream job reading `s3://` uploads from the local S3 store, published as `photoscore upload
--to` publishes them: each is scored, with the batch path's score of the same bytes bit for bit; a
missing object is dead-lettered as unreadable_uri."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from _s3_fixtures import upload
from _stream_fixtures import MODEL, collect, produce, running_broker, running_stream, stream_config
from jobs.topic_io import upload_files
from udfs.messages import encode_upload

pytestmark = pytest.mark.integration


def test_stream_scores_s3_uploads_as_the_batch_path_scores_their_bytes(
        s3_store, stream_registry, corpus_features, tmp_path):
    from _photo_fixtures import worker_python  # the workers run this checkout's code (storage-confine's helper)
    from udfs.bundle import read_feature_schema
    from udfs.formats import load_scorer
    from udfs.scoring import score_frame

    config = stream_config(tmp_path / "home", stream_registry,
                           f"storage.photo_roots={json.dumps([s3_store.root])}",
                           f"flink.python={worker_python(tmp_path / 'worker')}")
    photos = sorted(corpus_features["photo_id"])[:12]
    uris = upload(s3_store, [Path(p) for p in photos], "stream/")
    missing = f"{s3_store.root}stream/missing.jpg"
    with running_broker(config, "ephemeral") as bootstrap, running_stream(config) as job:
        topic = config.kafka.topics.uploaded
        refs = upload_files(bootstrap, topic, photos, photo_ids=uris, uris=uris)
        (gone,) = produce(bootstrap, topic, [("gone", encode_upload("gone", missing))])
        scores, dlq = collect(config, bootstrap, {*refs, gone}, job_log=Path(job["log"]))

    by_ref = {s["upload_ref"]: s for s in scores}
    assert set(by_ref) >= set(refs)
    assert [d["reason_code"] for d in dlq if d["source_ref"] == gone] == ["unreadable_uri"]
    assert not [d for d in dlq if d["source_ref"] in set(refs)]
    version = stream_registry["v1"]
    bundle = stream_registry["bundles"][version]
    batch = score_frame(corpus_features, load_scorer(bundle, "native"), read_feature_schema(bundle),
                        MODEL, version, "batch").scores
    batch = dict(zip(batch["photo_id"], batch["score"]))
    for ref, uri, path in zip(refs, uris, photos):
        s = by_ref[ref]
        assert (s["photo_id"], s["model_version"]) == (uri, version)
        assert s["score"] == batch[path], uri
