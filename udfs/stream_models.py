"""The models the stream scores with: one RolloutHolder per registered model (`scoring.models`)
follows that model's rollout plan in the registry and keeps a loaded export of every version the
plan scores with, swapped atomically; its canary guardrail ends a failing canary by itself.

Nothing here knows about Flink (jobs/stream_score.py wires it; tests and the bench call it).
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Optional

from udfs.errors import PhotoscoreError
from udfs.features import feature_set
from udfs.guardrail import CanaryGuardrail, Pair
from udfs.reference_profile import ReferenceProfile, load_profile
from udfs.rollout import RolloutPlan

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedModel:
    """One loaded export of one model version; immutable, so swapping the reference is atomic."""

    name: str
    version: int
    export_format: str
    scorer: object
    schema: object  # udfs.bundle.FeatureSchema
    columns: tuple = ()  # positions of schema.names in its feature version's names
    profile: Optional[ReferenceProfile] = None  # its bundle's reference profile (None: built before profiles)

    @property
    def feature_version(self) -> int:
        """The feature version the model was trained on: the one the stream computes for it."""
        return self.schema.feature_version

    @property
    def identity(self) -> tuple[str, int, str]:
        return (self.name, self.version, self.export_format)


def load_model(name: str, version: int, bundle_dir: Path, export_format: str, threads: int = 1) -> LoadedModel:
    """Load (checksums verified) one export of a resolved bundle, with the positions of its
    features in the rows of the feature version it was trained on (which this photoscore must
    compute: a PhotoscoreError otherwise) and its reference profile."""
    from udfs.bundle import read_feature_schema
    from udfs.formats import load_scorer

    scorer = load_scorer(bundle_dir, export_format, threads=threads)
    schema = read_feature_schema(bundle_dir)
    names = feature_set(schema.feature_version).names
    unknown = [n for n in schema.names if n not in names]
    if unknown:
        raise PhotoscoreError(f"{bundle_dir}: the model needs features {unknown} that "
                              f"feature version {schema.feature_version} does not compute")
    return LoadedModel(name, int(version), scorer.format, scorer, schema,  # the id, not an old alias
                       tuple(names.index(n) for n in schema.names), load_profile(bundle_dir))


@dataclass(frozen=True)
class ServingSet:
    """A model's plan and a loaded export of every version in `plan.versions`: one immutable value,
    so a photo scored with it sees a plan and the models it names, never half of a change."""

    plan: RolloutPlan
    models: Mapping[int, LoadedModel] = field(default_factory=dict)

    @classmethod
    def alone(cls, model: LoadedModel) -> "ServingSet":
        """`model` as the champion of a plan without a rollout."""
        return cls(RolloutPlan(model.name, model.version), {model.version: model})


# Versions that left the plan stay loaded, the newest few: a rollback to the previous champion (or
# a canary set back to 0 and raised again) swaps within one poll, with no download and no load.
WARM_VERSIONS = 2


class RolloutHolder:
    """One registered model's ServingSet, re-read every `poll_interval_s` in a background thread
    (`start`).

    `read_plan()` is one registry call; versions the new plan names that are not loaded yet are
    resolved (download + checksums) and loaded off the scoring thread, loaded ones are reused, and
    the new ServingSet replaces the old one in one reference assignment. Any error keeps the
    current set (a registry outage never stops scoring). `observe` feeds the canary guardrail; when
    it trips, `end_canary(reason)` runs once, in the background, and the next poll serves the
    champion everywhere.
    """

    def __init__(self, name: str, read_plan: Callable[[], RolloutPlan],
                 resolve: Callable[[int], tuple[str, int, Path]], export_format: str,
                 poll_interval_s: float = 5.0, threads: int = 1, guardrail: Optional[CanaryGuardrail] = None,
                 end_canary: Optional[Callable[[str], object]] = None):
        self.name = name
        self._read_plan, self._resolve = read_plan, resolve
        self.export_format, self.threads = export_format, threads
        self.poll_interval_s = float(poll_interval_s)
        self.guardrail, self._end_canary = guardrail, end_canary
        self._serving: Optional[ServingSet] = None
        self._warm: dict[int, LoadedModel] = {}  # retired versions, oldest first
        self._polling = threading.Lock()
        self._stopping = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self.last_error: Optional[str] = None
        self.swaps = 0
        self.loads = 0

    def current(self) -> Optional[ServingSet]:
        """The set to score the next photo with (None until one could be loaded)."""
        return self._serving

    def refresh(self) -> Optional[ServingSet]:
        """Read the plan now and swap when it changed; errors keep the current set (and are kept in
        `last_error`)."""
        if not self._polling.acquire(blocking=False):
            return self._serving  # another poll is running
        try:
            plan = self._read_plan()
            current = self._serving
            if current is None or plan != current.plan:
                loaded = {**self._warm, **(current.models if current else {})}
                models = {v: loaded.get(v) or self._load(v) for v in plan.versions}
                retired = [v for v in loaded if v not in models]
                self._warm = {v: loaded[v] for v in retired[-WARM_VERSIONS:]}
                self._serving = ServingSet(plan, models)
                self.swaps += current is not None
                log.info("model %s now scores with %s (was: %s)", self.name, plan.describe(),
                         current.plan.describe() if current else None)
            self.last_error = None
        except Exception as exc:  # noqa: BLE001 - keep scoring with what we have
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.warning("rollout poll of %s failed (keeping %s): %s", self.name,
                        self._serving.plan.describe() if self._serving else None, self.last_error)
        finally:
            self._polling.release()
        return self._serving

    def _load(self, version: int) -> LoadedModel:
        name, resolved, bundle_dir = self._resolve(version)
        self.loads += 1
        return load_model(name, resolved, bundle_dir, self.export_format, self.threads)

    def start(self) -> None:
        """Poll every `poll_interval_s` in a daemon thread until `stop()`: a subtask that receives
        nothing follows the plan too, so its next photo is scored with the current plan, not with
        the one it saw before going idle."""
        if self._thread is None:
            self._stopping.clear()
            self._thread = threading.Thread(target=self._poll_loop, name=f"rollout-poll-{self.name}", daemon=True)
            self._thread.start()

    def _poll_loop(self) -> None:
        while not self._stopping.wait(self.poll_interval_s):
            self.refresh()

    def stop(self) -> None:
        """End the polling thread (the current set stays)."""
        self._stopping.set()
        self._thread = None

    def observe(self, pair: Pair) -> Optional[str]:
        """Feed one champion/challenger pair to the guardrail; when it trips, end the canary (in a
        background thread: a registry write never blocks scoring) and return the reason."""
        if self.guardrail is None:
            return None
        verdict = self.guardrail.observe(pair)
        if verdict is None:
            return None
        reason = "; ".join(verdict.failures)
        log.warning("canary guardrail of %s tripped on challenger v%s: %s", self.name, pair.plan.challenger, reason)
        if self._end_canary is not None:
            threading.Thread(target=self._end_canary_logged, args=(reason,), name=f"end-canary-{self.name}",
                             daemon=True).start()
        return reason

    def _end_canary_logged(self, reason: str) -> None:
        try:
            self._end_canary(reason)
        except Exception as exc:  # noqa: BLE001 - the guardrail of another subtask may still end it
            log.error("could not end the canary of %s (%s): %s", self.name, reason, exc)


def registry_holders(settings) -> list[RolloutHolder]:
    """One RolloutHolder per registered model of `scoring.models` (default `mlflow.model_name`):
    its plan read with `models.rollouts.read_plan` every `flink.model_poll_interval_ms` (one
    registry call), versions resolved through `models.registry.resolve_bundle` (downloaded once,
    checksums verified), scored with `scoring.format`; its guardrail judges `rollout.guardrail_window`
    pairs and ends a failing canary with `models.rollouts.end_canary`."""
    from models.registry import resolve_bundle
    from models.rollouts import end_canary, read_plan

    def holder(name: str) -> RolloutHolder:
        return RolloutHolder(name, lambda: read_plan(settings, name),
                             lambda version: resolve_bundle(f"models:/{name}/{version}", settings),
                             settings.scoring.format, settings.flink.model_poll_interval_ms / 1000.0,
                             settings.scoring.threads, CanaryGuardrail(settings.rollout),
                             lambda reason: end_canary(settings, name, reason))

    return [holder(name) for name in settings.scoring.model_names(settings.mlflow)]
