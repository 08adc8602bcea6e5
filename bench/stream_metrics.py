"""Stream metrics bench: the PyFlink job's sustained photos/s with `monitor.metrics` on vs off.

Each run starts an ephemeral broker and the job (mini-cluster), streams a warm-up backlog, then
times the drain of a backlog of unique photos (as bench/stream.py's (b)); runs alternate off/on
for `--rounds` rounds, so a drift of the shared machine's speed hits both sides alike, and the
medians are compared. With metrics on, the run also scrapes the job's Prometheus page and checks
that it accounts for every upload.

    .venv/bin/python bench/stream_metrics.py [--photos 400] [--warmup 300] [--rounds 2] [--set KEY=VALUE]

Last line: `bench: name=stream_metrics off_pps=... on_pps=... ratio=... cost=...`
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from stream import ScoreWatcher, bench_models, make_photos, send


def drain_pps(config_args: list[str], photos: list[Path], warmup: list[Path], work: Path, tag: str) -> dict:
    """One run: {"pps": photos/s draining `photos` after `warmup`, "uploads": the metrics page's
    count of finished uploads (None with metrics off)}."""
    from jobs.broker import fetch_wait_ms, start_broker, stop_broker
    from jobs.config import load_settings
    from jobs.kafka_admin import configure_topics, topic_specs
    from jobs.stream_supervisor import start_stream, stop_stream, stream_status

    settings = load_settings([f"home={tempfile.mkdtemp(prefix=f'home-{tag}-', dir=work)}", *config_args], env={})
    try:
        bootstrap = start_broker(settings, mode="ephemeral")["bootstrap"]
        configure_topics(bootstrap, topic_specs(settings.kafka))
        start_stream(settings, restore=False)
        topic = settings.kafka.topics.uploaded
        watcher = ScoreWatcher(bootstrap, [settings.kafka.topics.scores, settings.kafka.topics.dlq],
                               fetch_wait_ms(settings, kind="ephemeral"))
        watcher.start()
        try:
            warm = send(bootstrap, topic, warmup, 0, f"{tag}-warm")
            if not watcher.wait_for(set(warm), 600):
                raise RuntimeError(f"the {tag} stream did not finish its warm-up; see {settings.home}/stream/job.log")
            t0 = time.time() * 1000
            refs = send(bootstrap, topic, photos, 0, tag)
            if not watcher.wait_for(set(refs), 600):
                raise RuntimeError(f"the {tag} stream did not drain its backlog; see {settings.home}/stream/job.log")
            done = max(watcher.seen[r][0] for r in refs)
        finally:
            watcher.stop.set()
            watcher.join(5)
        uploads = None
        if settings.monitor.metrics:
            # Python metrics reach the page when a bundle ends: give the last one a moment.
            time.sleep(2)
            uploads = stream_status(settings).get("uploads")
        return {"pps": len(refs) / max(1e-3, (done - t0) / 1000), "uploads": uploads, "sent": len(warm) + len(refs)}
    finally:
        stop_stream(settings, stop_registry=False)
        stop_broker(settings)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=400, help="backlog whose drain rate is timed")
    parser.add_argument("--warmup", type=int, default=300, help="photos streamed before timing")
    parser.add_argument("--rounds", type=int, default=2, help="off/on pairs (alternating order)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="settings override for both sides (e.g. flink.parallelism=2)")
    args = parser.parse_args(argv)

    from jobs.config import load_settings
    from jobs.stream_supervisor import registry_url_for_job, stop_stream

    work = Path(tempfile.mkdtemp(prefix="bench-stream-metrics-"))
    roots = f"storage.photo_roots=[{work}]"
    registry = load_settings([f"home={work / 'registry'}", roots], env={})
    pps: dict[bool, list[float]] = {False: [], True: []}
    try:
        bench_models(work, registry)
        base = [f"mlflow.tracking_uri={registry_url_for_job(registry)}", "flink.checkpoint_interval_ms=5000", roots,
                *args.overrides]
        for r in range(args.rounds):
            for metrics in ((False, True) if r % 2 == 0 else (True, False)):
                tag = f"r{r}-{'on' if metrics else 'off'}"
                # Fresh contents per run: a content seen before would be a cache hit, not work.
                first = (2 * r + metrics) * (args.photos + args.warmup)
                photos = make_photos(work / "corpus", work / tag, args.photos, first=first)
                warmup = make_photos(work / "corpus", work / f"{tag}-warm", args.warmup, first=first + args.photos)
                print(f"run {tag} ...", file=sys.stderr)
                run = drain_pps([*base, f"monitor.metrics={str(metrics).lower()}"], photos, warmup, work, tag)
                if metrics and run["uploads"] != run["sent"]:
                    raise RuntimeError(f"run {tag}: the metrics page counts {run['uploads']} uploads of {run['sent']}")
                pps[metrics].append(run["pps"])
                print(f"  {run['pps']:.1f} photos/s", file=sys.stderr)
    finally:
        stop_stream(registry)  # the registry server
        shutil.rmtree(work, ignore_errors=True)
    off, on = statistics.median(pps[False]), statistics.median(pps[True])
    print(f"\n{'metrics':<8} {'photos/s (median)':>18}  runs")
    for label, side in (("off", False), ("on", True)):
        print(f"{label:<8} {statistics.median(pps[side]):18.1f}  {' '.join(f'{v:.1f}' for v in pps[side])}")
    pairs = " ".join(f"{a / b:.3f}" for a, b in zip(pps[True], pps[False]))
    print(f"on/off {on / off:.3f} (per round: {pairs}): metrics cost {100 * (1 - on / off):.1f} % of throughput "
          "(goal <= 3 %)")
    print(f"bench: name=stream_metrics off_pps={off:.1f} on_pps={on:.1f} ratio={on / off:.3f} cost={1 - on / off:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
