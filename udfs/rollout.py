"""Rollouts as pure functions: which model versions score a content, and whose score is served.

A registered model's rollout plan (`RolloutPlan`) names its champion (serves), its challenger and
two shares of contents:

- `shadow_percent`: contents the challenger also scores; its score is recorded (role `shadow`),
  never served;
- `canary_percent`: contents whose served score comes from the challenger; the champion still
  scores them, as `shadow`, so every canary score has a champion pair to compare with.

The challenger scores max(shadow, canary) % of the contents: a content in the canary is also "in
the shadow" of a plan with shadow >= canary.

A content's arm is a pure function of (content_sha256, salt): the same photo gets the same arm in
the Spark backfill and the Flink stream, across restarts and replays, and a larger canary only
adds contents to it (buckets below the share). Each new rollout draws a new salt, so the next
canary is a fresh sample instead of the same unlucky users.

The plan is stored as tags on the registered model (`plan_tag`, `plan_from_tags`), so the CLI,
Spark, Flink and Airflow read one truth (models/rollouts.py reads and writes it).
Ground layer: no I/O, standard library only.
"""
from __future__ import annotations

import hashlib
import json
import math
import uuid
from dataclasses import dataclass
from typing import Literal, Mapping

Role = Literal["served", "shadow"]
ROLES: tuple[Role, ...] = ("served", "shadow")
Arm = Literal["champion", "shadow", "canary"]

# The plan is one JSON tag on the registered model, so a change is one atomic write that every
# reader sees whole (the champion is the `champion` alias, not part of it).
PLAN_TAG = "rollout"

_BUCKET_SPACE = 2 ** 64


@dataclass(frozen=True)
class RolloutPlan:
    """One registered model's rollout: who serves, who is tried, on which share of contents."""

    model_name: str
    champion: int | None           # the `champion` alias' version (None: nothing serves yet)
    challenger: int | None = None  # None: no rollout
    shadow_percent: float = 0.0
    canary_percent: float = 0.0
    salt: str = ""
    updated_ms: int = 0

    def __post_init__(self):
        for what, share in (("shadow_percent", self.shadow_percent), ("canary_percent", self.canary_percent)):
            if not (isinstance(share, (int, float)) and math.isfinite(share) and 0.0 <= share <= 100.0):
                raise ValueError(f"{what} must be a number from 0 to 100, got {share!r}")

    @property
    def active(self) -> bool:
        """A challenger other than the champion scores some contents."""
        return (self.challenger is not None and self.challenger != self.champion
                and max(self.shadow_percent, self.canary_percent) > 0)

    @property
    def versions(self) -> tuple[int, ...]:
        """The versions this plan scores with: the champion, then the challenger when active."""
        out = () if self.champion is None else (self.champion,)
        return out + ((self.challenger,) if self.active else ())

    def describe(self) -> str:
        """One line: champion, challenger and the shares."""
        if not self.active:
            return f"{self.model_name}: champion v{self.champion}, no rollout"
        return (f"{self.model_name}: champion v{self.champion}, challenger v{self.challenger} "
                f"(shadow {self.shadow_percent:g} %, canary {self.canary_percent:g} %, salt {self.salt})")


@dataclass(frozen=True)
class Assignment:
    """One model version scoring one content, and what its score is for."""

    version: int
    role: Role


def new_salt() -> str:
    """A fresh salt for a new rollout."""
    return uuid.uuid4().hex[:12]


def bucket(content_sha256: str, salt: str) -> float:
    """The content's position in [0, 100) under `salt`: uniform over contents, fixed per pair."""
    digest = hashlib.sha256(f"{salt}:{content_sha256}".encode()).digest()
    return int.from_bytes(digest[:8], "big") * 100.0 / _BUCKET_SPACE


def arm(content_sha256: str, plan: RolloutPlan) -> Arm:
    """`canary` (the challenger serves), `shadow` (the challenger also scores) or `champion` (only
    the champion scores)."""
    if not plan.active:
        return "champion"
    position = bucket(content_sha256, plan.salt)
    if position < plan.canary_percent:
        return "canary"
    if position < plan.shadow_percent:
        return "shadow"
    return "champion"


def assignments(content_sha256: str, plan: RolloutPlan) -> tuple[Assignment, ...]:
    """Who scores the content and whose score is served: exactly one `served` assignment (when
    the plan has a champion), the champion's first."""
    if plan.champion is None:
        return ()
    which = arm(content_sha256, plan)
    if which == "champion":
        return (Assignment(plan.champion, "served"),)
    if which == "shadow":
        return (Assignment(plan.champion, "served"), Assignment(plan.challenger, "shadow"))
    return (Assignment(plan.champion, "shadow"), Assignment(plan.challenger, "served"))


def plan_from_tags(model_name: str, champion: int | None, tags: Mapping[str, str]) -> RolloutPlan:
    """The plan stored on a registered model (its tags and its champion's version). A model whose
    tags carry no plan has none (champion only); a malformed plan raises ValueError naming it."""
    text = tags.get(PLAN_TAG, "")
    if not text:
        return RolloutPlan(model_name, champion)
    try:
        stored = json.loads(text)
        challenger = stored.get("challenger")
        return RolloutPlan(model_name, champion, None if challenger is None else int(challenger),
                           float(stored.get("shadow_percent", 0)), float(stored.get("canary_percent", 0)),
                           str(stored.get("salt", "")), int(stored.get("updated_ms", 0)))
    except (AttributeError, TypeError, ValueError) as exc:
        raise ValueError(f"registered model {model_name!r} has a malformed rollout plan in its tag "
                         f"{PLAN_TAG!r} ({text[:200]!r}): {exc}") from None


def plan_tag(plan: RolloutPlan) -> str:
    """The plan's tag value (JSON)."""
    return json.dumps({"challenger": plan.challenger, "shadow_percent": plan.shadow_percent,
                       "canary_percent": plan.canary_percent, "salt": plan.salt, "updated_ms": plan.updated_ms},
                      sort_keys=True)
