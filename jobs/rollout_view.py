"""What `photoscore rollout status` and `photoscore models --history` print: a plan with its arms,
and audit events one per line (models/rollouts.py keeps them; this only renders them)."""
from __future__ import annotations

from datetime import datetime, timezone

from udfs.rollout import RolloutPlan

# The keys every audit event has; any other key is a detail of that action (shares, salt, alias).
_EVENT_KEYS = ("at_ms", "action", "who", "from", "to", "why", "model_name")


def arm_shares(plan: RolloutPlan) -> dict[str, float]:
    """The share of contents (%) in each arm: champion only, challenger in shadow, challenger serving."""
    if not plan.active:
        return {"champion": 100.0, "shadow": 0.0, "canary": 0.0}
    tried = max(plan.shadow_percent, plan.canary_percent)
    return {"champion": 100.0 - tried, "shadow": tried - plan.canary_percent, "canary": plan.canary_percent}


def iso_utc(at_ms: int) -> str:
    """Epoch ms as an ISO time in UTC, to the second."""
    return datetime.fromtimestamp(at_ms / 1000, tz=timezone.utc).isoformat(timespec="seconds")


def _version(v) -> str:
    return "-" if v is None else f"v{v}"


def event_line(event: dict) -> str:
    """One audit event: time (UTC), action, who, from -> to, why, details."""
    details = " ".join(f"{k}={event[k]}" for k in sorted(event) if k not in _EVENT_KEYS)
    why = event.get("why") or "-"
    return (f"{iso_utc(event['at_ms'])}  {event.get('model_name', '')}{' ' if event.get('model_name') else ''}"
            f"{event['action']:<13} {event['who']:<16} {_version(event.get('from'))} -> {_version(event.get('to'))}"
            f"  why: {why}" + (f"  [{details}]" if details else ""))


def status_dict(plan: RolloutPlan, events: list[dict], last: int = 5) -> dict:
    """The plan, its arms and the newest `last` audit events, JSON-ready."""
    return {"model_name": plan.model_name, "champion": plan.champion, "challenger": plan.challenger,
            "active": plan.active, "shadow_percent": plan.shadow_percent, "canary_percent": plan.canary_percent,
            "salt": plan.salt, "updated_ms": plan.updated_ms, "arms": arm_shares(plan),
            "recent_events": events[-last:]}


def status_lines(plan: RolloutPlan, events: list[dict], last: int = 5) -> list[str]:
    """`rollout status` for a person: the plan, the arms, the newest audit events."""
    arms = arm_shares(plan)
    lines = [plan.describe(),
             "arms: " + ", ".join(f"{name} {share:g} %" for name, share in arms.items()),
             f"plan updated: {iso_utc(plan.updated_ms) if plan.updated_ms else 'never'}",
             f"last {min(last, len(events))} of {len(events)} audit events:"]
    return lines + ["  " + event_line(e) for e in events[-last:]]
