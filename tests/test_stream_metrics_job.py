"""The running job's Prometheus metrics: N uploads (photos, broken files, malformed messages) are
scraped back from `stream status`'s metrics URL, with a real HTTP client, as N finished uploads
with the right fates; the page and the Flink REST endpoint answer on 127.0.0.1 only."""
from __future__ import annotations

import json
import socket
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

from _stream_fixtures import collect, produce, running_broker, running_stream, stream_config
from jobs.supervise import WaitTimeout, wait_until
from udfs.messages import encode_upload
from udfs.stream_metrics import GAUGE_SCALE, SCORE, headline, metric_values, parse_metrics

pytestmark = pytest.mark.integration

FEATURES = ["mean_luma", "sharpness"]


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as resp:
        assert resp.status == 200
        return resp.read().decode()


def non_loopback_address() -> str | None:
    """An address of this machine other than loopback (None when it has none)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the outgoing interface
        except OSError:
            return None
        address = s.getsockname()[0]
    return None if address.startswith("127.") or address == "0.0.0.0" else address


def test_scraped_metrics_account_for_every_upload(stream_registry, corpus_dir, corpus_features, bad_inputs, tmp_path):
    from jobs.stream_supervisor import stream_status

    config = stream_config(tmp_path / "home", stream_registry, "monitor.stream_window=10",
                           f"monitor.stream_features={json.dumps(FEATURES)}", roots=[corpus_dir])
    photos = sorted(corpus_features["photo_id"])[:30]
    messages = [(p, encode_upload(p, Path(p).as_uri())) for p in photos]
    messages += [(p, encode_upload(p, Path(p).as_uri())) for p in sorted(bad_inputs)]
    messages += [("bad1", b"{not json"), ("bad2", b"[]"),
                 ("gone", encode_upload("gone", (corpus_dir / "nope.jpg").as_uri())),
                 ("dup", encode_upload("dup", inline=Path(photos[0]).read_bytes()))]
    with running_broker(config, "ephemeral") as bootstrap, running_stream(config) as job:
        status = stream_status(config)
        url, dashboard = status["metrics_url"], status["dashboard_url"]
        assert url.startswith("http://127.0.0.1:") and dashboard.startswith("http://127.0.0.1:")
        refs = produce(bootstrap, config.kafka.topics.uploaded, messages)
        scores, dlq = collect(config, bootstrap, set(refs), job_log=Path(job["log"]))
        n = len(messages)
        assert len({s["upload_ref"] for s in scores}) + len({d["source_ref"] for d in dlq}) == n

        # Python metrics reach the JVM when a bundle ends, the page when it is scraped: wait for all N.
        def finished():
            samples = parse_metrics(scrape(url))
            return samples if headline(samples)["uploads"] == n else None

        try:
            samples = wait_until(finished, 60, 1.0, what=f"the metrics of {n} uploads")
        except WaitTimeout:
            raise AssertionError(scrape(url)[-6000:]) from None
        figures = headline(samples)
        assert {k: stream_status(config)[k] for k in figures} == figures  # what `stream status` prints
        assert figures["scored"] + figures["dead_lettered"] == n
        assert figures["scored"] == len({s["upload_ref"] for s in scores})
        reasons = Counter()
        for labels, value in metric_values(samples, "dead_letters"):
            reasons[labels["reason"]] += int(value)
        assert reasons == Counter(d["reason_code"] for d in dlq)
        assert sum(v for _, v in metric_values(samples, "cache_hits")) == sum(s["from_cache"] for s in scores) >= 1
        versions = {(labels["model"], labels["version"], labels["role"]) for labels, _ in
                    metric_values(samples, "scores")}
        assert versions == {(s["model_name"], str(s["model_version"]), "served") for s in scores}
        assert figures["p99_latency"] is not None
        # Rolling means and bands of every exported feature and the score, bands around a sane value.
        for metric in ("rolling_mean_e6", "band_low_e6", "band_high_e6"):
            assert {labels["feature"] for labels, _ in metric_values(samples, metric)} == {*FEATURES, SCORE}
        low = {labels["feature"]: v for labels, v in metric_values(samples, "band_low_e6")}
        high = {labels["feature"]: v for labels, v in metric_values(samples, "band_high_e6")}
        assert all(low[f] < high[f] for f in low)
        means = [v / GAUGE_SCALE for labels, v in metric_values(samples, "rolling_mean_e6") if labels["feature"] == SCORE]
        assert means and all(0.0 <= m <= 1.0 for m in means)

        # The Flink REST endpoint answers; neither it nor the metrics listen beyond loopback.
        with urllib.request.urlopen(f"{dashboard}/overview", timeout=10) as resp:
            assert "flink-version" in json.loads(resp.read())
        other = non_loopback_address()
        if other is not None:
            for port in (int(url.split(":")[2].split("/")[0]), int(dashboard.rsplit(":", 1)[1])):
                with pytest.raises(OSError):
                    socket.create_connection((other, port), timeout=2).close()
