"""The stream bench's in-process figures (bench/stream.py): the pipeline's photos/s run by one
process per core through the stream's own functions (udfs.stream_scoring.process_message), with
one model or with a rollout scoring two versions per photo from one feature pass (shadow 100 %),
and the rollback switch time of the holder the Flink job uses (udfs.stream_models.RolloutHolder).
"""
from __future__ import annotations

import time
from pathlib import Path

_LIMIT_WORKER: dict = {}


def _serving(bundles: tuple, shadow_percent: float):
    """A ServingSet of the loaded bundles: the first is the champion; a second is the challenger
    of a shadow rollout of `shadow_percent`."""
    from udfs.rollout import RolloutPlan
    from udfs.stream_models import ServingSet, load_model

    models = [load_model(name, version, Path(bundle_dir), "native") for name, version, bundle_dir in bundles]
    champion = models[0]
    challenger = models[1].version if len(models) > 1 else None
    plan = RolloutPlan(champion.name, champion.version, challenger, shadow_percent if challenger else 0.0,
                       salt="bench")
    return ServingSet(plan, {m.version: m for m in models})


def _limit_worker_init(bundles: tuple, shadow_percent: float, limits, intake, warm_message: bytes, warm) -> None:
    """A limit worker: load the models once, push one message through (imports, caches), then
    wait at `warm` (a barrier) until every worker and the timer are ready."""
    from udfs.stream_scoring import process_message

    serving = _serving(bundles, shadow_percent)
    _LIMIT_WORKER.update(serving=serving, limits=limits, intake=intake)
    process_message(warm_message, "bench/0/-1", serving, {}, limits, intake)
    warm.wait()


def _limit_worker_run(chunk: list[tuple[int, bytes]]) -> int:
    """Push (index, message) uploads through the whole in-process pipeline; returns how many."""
    from udfs.stream_scoring import process_message

    for i, message in chunk:
        process_message(message, f"bench/0/{i}", _LIMIT_WORKER["serving"], {}, _LIMIT_WORKER["limits"],
                        _LIMIT_WORKER["intake"])
    return len(chunk)


def limit_pps(paths: list[Path], bundles: tuple, limits, intake, workers: int, shadow_percent: float = 0.0) -> float:
    """photos/s of the in-process pipeline on the same messages the stream gets, run by `workers`
    processes at once: the limit of the cores the stream's JVM and Python workers share. `bundles`:
    ((name, version, bundle_dir), ...), the champion first; with a second one, it shadows
    `shadow_percent` of the photos.

    Spawned, not forked: XGBoost's OpenMP threads do not survive a fork."""
    import multiprocessing

    from jobs.topic_io import file_upload

    ctx = multiprocessing.get_context("spawn")
    messages = [(i, file_upload(p.name, p)) for i, p in enumerate(paths)]
    chunks = [messages[k:k + 10] for k in range(0, len(messages), 10)]
    warm = ctx.Barrier(workers + 1)
    with ctx.Pool(workers, _limit_worker_init, (bundles, shadow_percent, limits, intake, messages[0][1], warm)) as pool:
        warm.wait(timeout=600)  # every worker has loaded the models and scored one photo
        t0 = time.perf_counter()
        done = sum(pool.imap_unordered(_limit_worker_run, chunks))
        return done / (time.perf_counter() - t0)


def shadow_cost(paths: list[Path], champion: tuple, challenger: tuple, limits, intake, workers: int) -> dict:
    """The throughput cost of a second model per photo: the single-model rate (measured before and
    after, averaged: the VM's speed drifts) against shadow 100 % (both versions score every photo)."""
    before = limit_pps(paths, (champion,), limits, intake, workers)
    shadow = limit_pps(paths, (champion, challenger), limits, intake, workers, shadow_percent=100.0)
    after = limit_pps(paths, (champion,), limits, intake, workers)
    single = (before + after) / 2
    return {"single_pps": single, "single_range": (before, after), "shadow_pps": shadow, "cost": 1 - shadow / single}


def rollback_switch_ms(settings, name: str, champion: int, previous: int) -> float:
    """ms from `photoscore rollback` returning to the moment a RolloutHolder polling every
    `flink.model_poll_interval_ms` (as each Flink subtask does) serves `previous` again. The audit
    trail must show `previous` -> `champion` (models.rollouts.promote)."""
    from jobs.supervise import wait_until
    from models.rollouts import rollback
    from udfs.stream_models import registry_holders

    (holder,) = [h for h in registry_holders(settings) if h.name == name]
    holder.refresh()  # as the operator's open() does
    assert holder.current().plan.champion == champion, holder.current().plan.describe()
    rollback(settings, name, why="bench: rollback switch time")
    holder.start()  # polling as in the job's operator
    try:
        started = time.perf_counter()
        wait_until(lambda: holder.current().plan.champion == previous, 60, 0.002,
                   what=f"the holder of {name} to serve version {previous} after the rollback")
        return (time.perf_counter() - started) * 1000.0
    finally:
        holder.stop()
