"""Rollout plans and the audit trail of a registered model, stored in the MLflow registry.

The plan (udfs/rollout.py) is one JSON tag on the registered model and the champion is its
`champion` alias, so every engine reads one truth with one registry call (`read_plan`). Every
change of who serves (promote, rollback, a rollout set or stopped, a canary ended by a guardrail)
appends an audit event - who, when, what, from, to, why - as a tag `audit.<ms>.<id>` on the
registered model: MLflow keeps no alias history (mlflow#2169), and tags live with the model in
the same store, so the trail is as durable as the aliases it explains.
"""
from __future__ import annotations

import getpass
import json
import os
import time
import uuid
from dataclasses import replace
from typing import Any

from models.registry import client, get_registered, promote as set_alias, require_passed_parity
from udfs.errors import PhotoscoreError
from udfs.rollout import PLAN_TAG, RolloutPlan, new_salt, plan_from_tags, plan_tag

AUDIT_PREFIX = "audit."
# Actions that move the champion alias: `rollback` walks back through them.
CHAMPION_MOVES = ("promote", "rollback")


def actor() -> str:
    """Who is acting: PHOTOSCORE_ACTOR (an orchestrator names itself), else the OS user."""
    return os.environ.get("PHOTOSCORE_ACTOR") or getpass.getuser()


def read_plan(config, name: str) -> RolloutPlan:
    """The registered model's plan: champion alias, challenger and shares (one registry call)."""
    registered = get_registered(config, name)
    champion = (registered.aliases or {}).get("champion")
    try:
        return plan_from_tags(name, None if champion is None else int(champion), registered.tags or {})
    except ValueError as exc:
        raise PhotoscoreError(f"{exc}; reset it with `photoscore rollout stop --name {name}`") from None


def record_event(config, name: str, action: str, *, who: str | None = None, why: str = "",
                 from_version: int | None = None, to_version: int | None = None, **details: Any) -> dict:
    """Append one audit event to the registered model's trail; returns it."""
    at_ms = int(time.time() * 1000)
    event = {"at_ms": at_ms, "action": action, "who": who or actor(), "from": from_version, "to": to_version,
             "why": why, **details}
    key = f"{AUDIT_PREFIX}{at_ms:013d}.{uuid.uuid4().hex[:6]}"
    client(config).set_registered_model_tag(name, key, json.dumps(event, sort_keys=True))
    return event


def history(config, name: str) -> list[dict]:
    """The registered model's audit trail, oldest first."""
    tags = get_registered(config, name).tags or {}
    events = [json.loads(value) for key, value in sorted(tags.items()) if key.startswith(AUDIT_PREFIX)]
    return sorted(events, key=lambda e: e["at_ms"])


def _write_plan(config, plan: RolloutPlan) -> RolloutPlan:
    plan = replace(plan, updated_ms=int(time.time() * 1000))
    client(config).set_registered_model_tag(plan.model_name, PLAN_TAG, plan_tag(plan))
    return plan


def set_rollout(config, name: str, *, shadow_percent: float | None = None, canary_percent: float | None = None,
                challenger: int | None = None, who: str | None = None, why: str = "") -> RolloutPlan:
    """Start or change the rollout of `challenger` (default: the `challenger` alias, else the plan's).

    A new challenger draws a new salt (a fresh sample of contents); changing the shares of the
    running rollout keeps it, so a canary grown from 5 to 50 % keeps its first 5 %. Shares left
    out keep their current value (0 for a new rollout).
    """
    current = read_plan(config, name)
    if current.champion is None:
        raise PhotoscoreError(f"{name!r} has no champion: promote one first (photoscore promote --name {name} "
                              "--version N --alias champion)")
    if challenger is None:
        alias = (get_registered(config, name).aliases or {}).get("challenger")
        challenger = int(alias) if alias is not None else current.challenger
    if challenger is None:
        raise PhotoscoreError(f"{name!r} has no challenger: name one with --challenger N, or promote a version "
                              "to the `challenger` alias")
    if challenger == current.champion:
        raise PhotoscoreError(f"version {challenger} of {name!r} is the champion already; a rollout tries another")
    require_passed_parity(config, name, challenger)
    same = current.challenger == challenger and current.salt
    plan = RolloutPlan(name, current.champion, challenger,
                       current.shadow_percent if shadow_percent is None and same else float(shadow_percent or 0),
                       current.canary_percent if canary_percent is None and same else float(canary_percent or 0),
                       current.salt if same else new_salt())
    plan = _write_plan(config, plan)
    record_event(config, name, "rollout_set", who=who, why=why, from_version=plan.champion, to_version=challenger,
                 shadow_percent=plan.shadow_percent, canary_percent=plan.canary_percent, salt=plan.salt)
    return plan


def stop_rollout(config, name: str, *, who: str | None = None, why: str = "", action: str = "rollout_stop") -> RolloutPlan:
    """End the rollout: the champion alone scores and serves every content."""
    current = read_plan(config, name)
    plan = _write_plan(config, RolloutPlan(name, current.champion))
    record_event(config, name, action, who=who, why=why, from_version=current.challenger, to_version=current.champion)
    return plan


def end_canary(config, name: str, reason: str, *, who: str = "guardrail") -> RolloutPlan | None:
    """Set the canary share back to 0 (the challenger keeps its shadow share, so the comparison
    goes on) and record why; None when no canary was running (another worker ended it first)."""
    current = read_plan(config, name)
    if not current.active or current.canary_percent == 0:
        return None
    plan = _write_plan(config, replace(current, canary_percent=0.0))
    record_event(config, name, "canary_ended", who=who, why=reason, from_version=current.challenger,
                 to_version=current.champion, canary_percent_was=current.canary_percent)
    return plan


def promote(config, name: str, version: int, alias: str = "champion", *, who: str | None = None,
            why: str = "") -> int | None:
    """Point `alias` at `version` (parity gate enforced by models.registry.promote) and record it;
    returns the version the alias pointed at before. A challenger promoted to champion ends its
    rollout (it serves everything now)."""
    before = (get_registered(config, name).aliases or {}).get(alias)
    before = None if before is None else int(before)
    if alias == "champion":
        plan = read_plan(config, name)
        if plan.challenger == version:
            _write_plan(config, RolloutPlan(name, plan.champion))
    set_alias(config, name, str(version), alias)
    record_event(config, name, "promote", who=who, why=why, from_version=before, to_version=int(version), alias=alias)
    return before


def previous_champion(events: list[dict], current: int | None) -> int | None:
    """The champion before `current`, from the audit trail: the `from` of the newest champion move
    that made `current` champion."""
    for event in reversed(events):
        if (event.get("action") in CHAMPION_MOVES and event.get("alias", "champion") == "champion"
                and event.get("to") == current and event.get("from") is not None):
            return int(event["from"])
    return None


def rollback(config, name: str, *, who: str | None = None, why: str = "") -> tuple[int, int]:
    """The champion back to the previous champion in one call (and any rollout stopped); returns
    (from, to). Refused when the trail names no previous champion."""
    plan = read_plan(config, name)
    if plan.champion is None:
        raise PhotoscoreError(f"{name!r} has no champion to roll back; promote one with "
                              f"`photoscore promote --name {name} --version N --alias champion`")
    target = previous_champion(history(config, name), plan.champion)
    if target is None:
        raise PhotoscoreError(f"{name!r}: the audit trail names no champion before version {plan.champion}; "
                              f"promote one explicitly (photoscore promote --name {name} --version N)")
    if plan.active:
        _write_plan(config, RolloutPlan(name, plan.champion))
    set_alias(config, name, str(target), "champion")
    record_event(config, name, "rollback", who=who, why=why, from_version=plan.champion, to_version=target,
                 alias="champion")
    return plan.champion, target
