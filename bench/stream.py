"""Streaming bench: in-process limit vs the PyFlink job on the embedded broker, both broker modes.

On one photo set (the corpus photos, downscaled to <= 0.5 MP and made unique per upload, so every
upload is decoded - the content cache would otherwise hide the work):
 (a) limit: the in-process pipeline (parse -> read -> features -> score in a loop), photos/s, in
     one process per core at once (the cores the stream shares), measured just before and just
     after each mode's stream run and averaged
 (b) the stream's maximum sustained photos/s (a backlog drained by the job)
 (c) end-to-end latency p50/p99 (uploaded_at_ms -> score record received by a consumer) at 80% of (b)
 (d) the seed's load, 50,000 uploads/min (~833/s): held or not on this machine, and with what p99
 (e) rollouts, in process (bench/stream_inprocess.py): the cost of a second model per photo (shadow
     100 %: a logreg challenger also scores every photo from the same features) against the
     single-model run, and the rollback switch time of the holder the job's subtasks use
Every run checks produced = scored + dead-lettered (`lost`).
The job's source and this bench's consumer use the broker kind's fetch wait (jobs.broker.FETCH_WAIT_MS:
a short one starves consumers of the durable broker); the brokers' CPU from (b) on is printed, and
where a photo's CPU goes during (b): the job's client, its Flink JVM, its Python workers, this
bench's uploader and consumer, the broker processes (ms per photo, from /proc).

    .venv/bin/python bench/stream.py [--photos 600] [--warmup 1200] [--modes durable,ephemeral] [--seconds 15] [--rates 20,30] [--set KEY=VALUE] [--keep]
    .venv/bin/python bench/stream.py --modes ""      (only (e): no broker, no Flink)

Last line: `bench: name=stream limit_pps=... stream_pps=... efficiency=... p50_ms=... p99_ms=... lost=...`
(figures of the default, durable mode; the ephemeral ones follow with an `ephemeral_` prefix), then
`shadow_cost=... single_pps=... shadow_pps=... rollback_switch_ms=...`.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

SEED_LOAD_PPS = 50_000 / 60


def make_photos(corpus_dir: Path, out: Path, n: int, first: int = 0) -> list[Path]:
    """`n` unique JPEGs <= 0.5 MP from the corpus photos (variant i differs in one pixel).

    Variant i is source photo i mod S with pixel (0, 0) set from i mod 65,536: indices repeat a
    content only lcm(S, 65,536) apart (196,608 for the bench's 48 photos)."""
    from PIL import Image

    sources = sorted((corpus_dir / "photos").glob("*"))
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(first, first + n):
        with Image.open(sources[i % len(sources)]) as im:
            im = im.convert("RGB")
            scale = min(1.0, (500_000 / (im.width * im.height)) ** 0.5)
            im = im.resize((max(1, int(im.width * scale)), max(1, int(im.height * scale))))
            im.putpixel((0, 0), (i % 256, (i // 256) % 256, 7))
            buf = io.BytesIO()
            im.save(buf, "JPEG", quality=88)
        path = out / f"b{i:05d}.jpg"
        path.write_bytes(buf.getvalue())
        paths.append(path)
    return paths


def bench_models(work: Path, settings) -> tuple:
    """A corpus of 48 photos in `work`/corpus, its features, and two versions of photo_quality
    trained on them in `settings`' registry: xgboost (made champion) and a logreg challenger."""
    import pandas as pd

    from models.corpus import build_corpus
    from models.registry import promote
    from models.train import train_and_register
    from models.trainers import TrainParams
    from udfs.features import extract_batch

    print("building corpus, features and a model ...", file=sys.stderr)
    build_corpus(work / "corpus", n=48, seed=5, broken=False, progress=False)
    labels = pd.read_parquet(work / "corpus" / "labels.parquet")
    feats = extract_batch(list(labels["photo_id"]), [Path(p).read_bytes() for p in labels["photo_id"]]).features
    feats.to_parquet(work / "features.parquet", index=False)
    trained = [train_and_register(work / "features.parquet", work / "corpus" / "labels.parquet", "low_quality",
                                  kind, "photo_quality", settings, TrainParams(trees=40, depth=5))
               for kind in ("xgboost", "logreg")]
    promote(settings, "photo_quality", str(trained[0].version), "champion")
    return tuple(trained)


class ScoreWatcher(threading.Thread):
    """Consumes photos.scores and photos.dlq from the beginning; records receive time per upload ref."""

    def __init__(self, bootstrap: str, topics: list[str], fetch_wait_ms: int):
        super().__init__(daemon=True)
        from kafka import KafkaConsumer, TopicPartition

        # The broker's own fetch wait (jobs.broker.fetch_wait_ms): on the durable broker a short one
        # makes Tansu answer empty fetches once a partition holds a few hundred batches.
        self.consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None,
                                      fetch_max_wait_ms=fetch_wait_ms)
        parts = [TopicPartition(t, p) for t in topics for p in sorted(self.consumer.partitions_for_topic(t) or [])]
        self.consumer.assign(parts)
        self.consumer.seek_to_beginning()
        # ref -> (received_ms, uploaded_ms, topic, scored_ms)
        self.seen: dict[str, tuple[float, int, str, int]] = {}
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            for tp, records in self.consumer.poll(timeout_ms=50).items():
                now = time.time() * 1000
                for r in records:
                    rec = json.loads(r.value)
                    ref = rec.get("upload_ref") or rec.get("source_ref")
                    self.seen.setdefault(ref, (now, int(rec.get("uploaded_at_ms") or 0), tp.topic,
                                               int(rec.get("scored_at_ms") or 0)))
        self.consumer.close()

    def wait_for(self, refs: set[str], timeout_s: float) -> bool:
        """True once every ref in `refs` has a record, False when `timeout_s` passes first."""
        from jobs.supervise import WaitTimeout, wait_until

        try:
            return wait_until(lambda: refs <= self.seen.keys(), timeout_s, 0.05,
                              what=f"records of {len(refs)} uploads")
        except WaitTimeout:
            return False


def send(bootstrap: str, topic: str, paths: list[Path], rate: float, tag: str) -> list[str]:
    """Publish one upload per path, paced at `rate`/s (0: as fast as possible); returns refs."""
    from jobs.topic_io import upload_files

    return upload_files(bootstrap, topic, paths, rate, photo_ids=[f"{tag}-{i}" for i in range(len(paths))])


def paced_latency(watcher: ScoreWatcher, bootstrap: str, topic: str, paths: list[Path], rate: float,
                  tag: str, sent: list[str]) -> dict:
    """Publish `paths` at `rate`/s; end-to-end latency percentiles (upload -> score received), and
    its two halves at the median: upload -> scored (source, parse, features, score) and
    scored -> received (sinks, broker, consumer)."""
    refs = send(bootstrap, topic, paths, rate, tag)
    sent.extend(refs)
    watcher.wait_for(set(refs), 300)
    got = [watcher.seen[r] for r in refs if r in watcher.seen]
    if not got:
        return {k: float("nan") for k in ("p50_ms", "p99_ms", "to_scored_p50_ms", "to_consumer_p50_ms")}
    received, uploaded, scored = (np.array([g[i] for g in got], dtype=float) for i in (0, 1, 3))
    total = received - uploaded
    has_score = scored > 0
    return {"p50_ms": float(np.percentile(total, 50)), "p99_ms": float(np.percentile(total, 99)),
            "to_scored_p50_ms": float(np.median((scored - uploaded)[has_score])) if has_score.any() else float("nan"),
            "to_consumer_p50_ms": float(np.median((received - scored)[has_score])) if has_score.any() else float("nan")}


def topic_refs(settings, bootstrap: str, fetch_wait_ms: int) -> set[str]:
    """Upload refs of every record in photos.scores and photos.dlq, read afresh from the beginning
    (tells a record the watcher missed from one that never reached the topics)."""
    from jobs.topic_io import read_topic

    refs = set()
    for topic in (settings.kafka.topics.scores, settings.kafka.topics.dlq):
        for _, _, value in read_topic(bootstrap, topic, idle_s=5.0, fetch_wait_ms=fetch_wait_ms):
            rec = json.loads(value)
            refs.add(rec.get("upload_ref") or rec.get("source_ref"))
    return refs


def cpu_seconds(pid: int | None) -> float:
    """CPU seconds (user + system) a live process has used so far; 0 when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, TypeError):
        return 0.0


def process_tree(root: int) -> list[int]:
    """`root` and its live descendants, from the parent links in /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += children.get(pid, [])
    return out


def cpu_by_role(job_pid: int, broker_pids: dict) -> dict[str, float]:
    """CPU seconds so far of every process a stream run uses, summed per role: the job's client,
    its Flink JVM, its Python workers (Beam's boot process and the interpreters it starts), this
    bench (uploader and consumer) and each broker process."""
    out = {"job client": 0.0, "Flink JVM": 0.0, "Python workers": 0.0}
    for pid in process_tree(job_pid) if job_pid else []:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                argv0 = fh.read().split(b"\0", 1)[0]
        except OSError:
            continue
        role = "job client" if pid == job_pid else "Flink JVM" if argv0.endswith(b"java") else "Python workers"
        out[role] += cpu_seconds(pid)
    out["bench"] = cpu_seconds(os.getpid())
    out.update({name: cpu_seconds(pid) for name, pid in broker_pids.items() if pid})
    return out


def run_mode(mode: str, base_config_args: list[str], photos: list[Path], warmup: list[Path], seconds: float,
             corpus_dir: Path, work: Path, rates: tuple[float, ...] = ()) -> dict:
    """(b), (c0), (c), (d) for one broker mode."""
    from jobs.broker import fetch_wait_ms, start_broker, stop_broker
    from jobs.config import load_settings
    from jobs.kafka_admin import configure_topics, topic_specs
    from jobs.stream_supervisor import start_stream, stop_stream

    home = Path(tempfile.mkdtemp(prefix=f"home-{mode}-", dir=work))
    # The job's source and the watcher default to the broker kind's fetch wait (`auto`): the broker
    # started below, in its own home, is of kind `mode`.
    settings = load_settings([f"home={home}", *base_config_args], env={})
    out: dict = {"mode": mode, "source_wait_ms": fetch_wait_ms(settings, settings.flink.fetch_max_wait_ms, mode),
                 "consumer_wait_ms": fetch_wait_ms(settings, kind=mode)}
    try:
        state = start_broker(settings, mode=mode)
        bootstrap = state["bootstrap"]
        broker_pids = {"tansu": state["tansu_pid"], "seaweedfs": state.get("seaweedfs_pid")}
        configure_topics(bootstrap, topic_specs(settings.kafka))
        job_pid = start_stream(settings).get("pid")  # None on a session cluster: no local processes
        topic = settings.kafka.topics.uploaded
        watcher = ScoreWatcher(bootstrap, [settings.kafka.topics.scores, settings.kafka.topics.dlq],
                               out["consumer_wait_ms"])
        watcher.start()
        # The job is up and the model loaded once a first score arrives.
        first = send(bootstrap, topic, photos[:4], 0, "first")
        if not watcher.wait_for(set(first), 240):
            raise RuntimeError(f"the stream did not score its first uploads in 240 s; see {home}/stream/job.log")
        sent = list(first)  # every upload ref, to account for each one at the end
        # Warm-up: a backlog of other photos, so the JVM's JIT and the workers reach steady state
        # (the first minute of a fresh JVM runs measurably slower).
        warm = send(bootstrap, topic, warmup, 0, "warm")
        watcher.wait_for(set(warm), 600)
        sent += warm
        # (b) backlog drain: max sustained rate. The broker's CPU is counted from here to the end.
        cpu0, wall0 = {k: cpu_seconds(p) for k, p in broker_pids.items()}, time.monotonic()
        roles0 = cpu_by_role(job_pid, broker_pids)
        backlog = photos[4:]
        t0 = time.time() * 1000
        refs = send(bootstrap, topic, backlog, 0, "max")
        sent += refs
        ok = watcher.wait_for(set(refs), 600)
        roles1, drain_s = cpu_by_role(job_pid, broker_pids), time.monotonic() - wall0
        # Where a photo's CPU goes while the backlog drains (milliseconds per photo, by role).
        out["cpu_ms_per_photo"] = {k: 1000 * (roles1[k] - roles0.get(k, 0.0)) / len(refs) for k in roles1}
        out["drain_cores"] = sum(roles1[k] - roles0.get(k, 0.0) for k in roles1) / drain_s
        done = max(watcher.seen[r][0] for r in refs if r in watcher.seen)
        out["stream_pps"] = len([r for r in refs if r in watcher.seen]) / max(1e-3, (done - t0) / 1000)
        out["drained"] = ok
        def latency_at(rate: float, n: int, first: int, tag: str) -> dict:
            """Latency of `n` photos uploaded at `rate`/s. Fresh contents each time (the cache would
            make repeated uploads nearly free): every caller's `first` keeps its variants apart."""
            fresh = make_photos(corpus_dir, work / f"{tag}-{mode}", n, first=first)
            return paced_latency(watcher, bootstrap, topic, fresh, rate, tag, sent)

        # (c0) latency with no queueing (one upload every 0.5 s), then (c) at 80% of (b).
        out["idle"] = latency_at(2.0, 20, 200_000, "idle")
        rate = 0.8 * out["stream_pps"]
        loaded = latency_at(rate, max(10, int(rate * seconds)), 100_000, "lat")
        out.update(rate_c=rate, loaded=loaded, p50_ms=loaded["p50_ms"], p99_ms=loaded["p99_ms"])
        # Latency at given loads (--rates), to compare profiles at the same photos/s.
        out["at_rates"] = {at: latency_at(at, max(10, int(at * seconds)), 400_000 + 20_000 * i, f"rate{i}")
                           for i, at in enumerate(rates)}
        # (d) the seed's load.
        out["seed_holds"] = out["stream_pps"] >= SEED_LOAD_PPS
        wall = time.monotonic() - wall0
        out["broker_cores"] = {k: (cpu_seconds(p) - cpu0[k]) / wall for k, p in broker_pids.items() if p}
        watcher.stop.set()
        watcher.join(5)
        out["produced"] = len(sent)
        out["accounted"] = len(watcher.seen)
        missing = [r for r in sent if r not in watcher.seen]
        out["lost"] = len(missing)
        if missing:
            out["missing"] = missing[:10]
            out["missing_found_later"] = sorted(set(missing) & topic_refs(settings, bootstrap, out["consumer_wait_ms"]))
        return out
    finally:
        stop_stream(settings, stop_registry=False)
        stop_broker(settings)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=600, help="backlog whose drain rate is (b)")
    parser.add_argument("--warmup", type=int, default=1200, help="photos streamed before measuring")
    parser.add_argument("--modes", default="durable,ephemeral")
    parser.add_argument("--seconds", type=float, default=15.0, help="duration of the paced latency run")
    parser.add_argument("--rates", default="", help="comma-separated photos/s: also measure latency at these loads")
    parser.add_argument("--limit-workers", type=int, default=os.cpu_count() or 1,
                        help="processes running the in-process pipeline for (a) (default: the machine's cores)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="settings override for the stream runs (e.g. flink.parallelism=2)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the work folder (photos, registry, brokers' data, job logs) for a look")
    args = parser.parse_args(argv)

    from jobs.config import load_settings
    from jobs.stream_supervisor import registry_url_for_job, stop_stream
    from models.registry import resolve_bundle
    from udfs.stream_scoring import upload_intake
    from stream_inprocess import limit_pps, rollback_switch_ms, shadow_cost

    work = Path(tempfile.mkdtemp(prefix="bench-stream-"))
    registry_home = work / "registry"
    # The photos are made under `work`: the stream reads them from there (storage.photo_roots).
    roots = f"storage.photo_roots=[{work}]"
    settings = load_settings([f"home={registry_home}", roots], env={})
    _, challenger = bench_models(work, settings)
    photos = make_photos(work / "corpus", work / "bench-photos", args.photos)
    warmup = make_photos(work / "corpus", work / "warmup-photos", args.warmup, first=300_000)
    name, v, bundle_dir = resolve_bundle("models:/photo_quality@champion", settings)
    url = registry_url_for_job(settings)

    def limit() -> float:
        return limit_pps(photos, ((name, v, str(bundle_dir)),), settings.features.limits(), upload_intake(settings),
                         args.limit_workers)

    rows = []
    try:
        # (e) before the stream runs, which serve the champion this leaves in place (the rollback).
        print("(e) rollouts in process: one model vs shadow 100 %, rollback switch ...", file=sys.stderr)
        _, cv, challenger_dir = resolve_bundle(f"models:/photo_quality/{challenger.version}", settings)
        rollout = shadow_cost(photos, (name, v, str(bundle_dir)), (name, cv, str(challenger_dir)),
                              settings.features.limits(), upload_intake(settings), args.limit_workers)
        from models.rollouts import promote as promote_audited
        promote_audited(settings, "photo_quality", cv, why="bench: a champion to roll back from")
        rollout["switch_ms"] = rollback_switch_ms(settings, "photo_quality", cv, v)
        for mode in [m for m in args.modes.split(",") if m]:
            # (a) is measured just before and just after the mode's stream run and averaged: the
            # VM's steal time moves a core's speed by 10-30 % within minutes, and (b)/(a) should
            # compare rates taken on the same machine.
            before = limit()
            print(f"(a) in-process limit, {args.limit_workers} processes: {before:.1f} photos/s; running the stream on the {mode} broker ...",
                  file=sys.stderr)
            row = run_mode(mode, [f"mlflow.tracking_uri={url}", "flink.checkpoint_interval_ms=5000", roots,
                                  *args.overrides],
                           photos, warmup, args.seconds, work / "corpus", work,
                           tuple(float(r) for r in args.rates.split(",") if r))
            after = limit()
            row["limit_pps"], row["limit_range"] = (before + after) / 2, (before, after)
            rows.append(row)
    finally:
        stop_stream(settings)  # the registry server
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(f"\nphotos: {len(photos)} unique JPEGs <= 0.5 MP; overrides: {' '.join(args.overrides) or 'none'}\n")
    lo, hi = rollout["single_range"]
    print(f"(e) one model {rollout['single_pps']:.1f} photos/s (before / after {lo:.1f} / {hi:.1f}), shadow 100 % "
          f"(two models per photo) {rollout['shadow_pps']:.1f} photos/s: cost {100 * rollout['cost']:.1f} % "
          f"(goal <= 10 %); rollback switch {rollout['switch_ms']:.0f} ms (poll interval "
          f"{settings.flink.model_poll_interval_ms} ms)")
    rollout_line = (f"shadow_cost={rollout['cost']:.3f} single_pps={rollout['single_pps']:.1f} "
                    f"shadow_pps={rollout['shadow_pps']:.1f} rollback_switch_ms={rollout['switch_ms']:.0f}")
    if not rows:
        print(f"bench: name=stream {rollout_line}")
        return 0
    print(f"{'mode':<10} {'limit pps':>9} {'stream pps':>10} {'eff':>5} {'@80% pps':>9} "
          f"{'p50 ms':>8} {'p99 ms':>8} {'833/s?':>7} {'lost':>5}")
    for r in rows:
        print(f"{r['mode']:<10} {r['limit_pps']:9.1f} {r['stream_pps']:10.1f} {r['stream_pps'] / r['limit_pps']:5.2f} "
              f"{r['rate_c']:9.1f} {r['p50_ms']:8.1f} {r['p99_ms']:8.1f} {'yes' if r['seed_holds'] else 'no':>7} "
              f"{r['lost']:5d}")
    print(f"\n{'mode':<10} {'latency at':<16} {'p50 ms':>8} {'p99 ms':>8} {'upload->scored':>15} {'scored->consumer':>17}")
    for r in rows:
        fixed = [(f"{at:.1f}/s", lat) for at, lat in r["at_rates"].items()]
        for label, lat in (("0.5 s apart", r["idle"]), *fixed, (f"{r['rate_c']:.1f}/s (80%)", r["loaded"])):
            print(f"{r['mode']:<10} {label:<16} {lat['p50_ms']:8.1f} {lat['p99_ms']:8.1f} "
                  f"{lat['to_scored_p50_ms']:15.1f} {lat['to_consumer_p50_ms']:17.1f}")
    for r in rows:
        print(f"{r['mode']}: limit before / after the stream run {r['limit_range'][0]:.1f} / {r['limit_range'][1]:.1f} photos/s")
    for r in rows:
        split = ", ".join(f"{k} {v:.1f}" for k, v in r["cpu_ms_per_photo"].items())
        print(f"{r['mode']}: CPU per photo during (b), ms: {split}; total "
              f"{sum(r['cpu_ms_per_photo'].values()):.1f} on {r['drain_cores']:.2f} busy cores "
              f"(in-process: {1000 * args.limit_workers / r['limit_pps']:.1f} on {args.limit_workers})")
    for r in rows:
        cores = ", ".join(f"{k} {v:.2f}" for k, v in r["broker_cores"].items())
        print(f"{r['mode']}: fetch.max.wait.ms source {r['source_wait_ms']} / consumer {r['consumer_wait_ms']}; "
              f"broker CPU from (b) on, in cores: {cores}")
    for r in rows:
        if r["lost"]:
            print(f"{r['mode']}: LOST {r['lost']} of {r['produced']} uploads, e.g. {r['missing']}; a fresh read "
                  f"of photos.scores and photos.dlq finds {len(r['missing_found_later'])} of them "
                  f"{r['missing_found_later'][:10]}")
    for r in rows:
        if not r["seed_holds"]:
            print(f"(d) {r['mode']}: 833 uploads/s needs ~{SEED_LOAD_PPS / r['stream_pps']:.0f}x this machine's "
                  f"stream rate; at that load the backlog (and p99) grows without bound")
    main_row = next((r for r in rows if r["mode"] == "durable"), rows[0])
    extra = " ".join(f"{r['mode']}_limit_pps={r['limit_pps']:.1f} {r['mode']}_stream_pps={r['stream_pps']:.1f} {r['mode']}_p50_ms={r['p50_ms']:.1f} "
                     f"{r['mode']}_p99_ms={r['p99_ms']:.1f} {r['mode']}_lost={r['lost']}"
                     for r in rows if r is not main_row)
    print(f"bench: name=stream limit_pps={main_row['limit_pps']:.1f} stream_pps={main_row['stream_pps']:.1f} "
          f"efficiency={main_row['stream_pps'] / main_row['limit_pps']:.2f} p50_ms={main_row['p50_ms']:.1f} "
          f"p99_ms={main_row['p99_ms']:.1f} lost={main_row['lost']} mode={main_row['mode']} "
          f"seed_833pps_holds={'yes' if main_row['seed_holds'] else 'no'} {extra} {rollout_line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
