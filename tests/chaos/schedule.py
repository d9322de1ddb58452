"""A seeded random schedule of changes on both sides and faults in between. Pure: a seed and a
size in, a list of steps out, so a failing seed replays the same schedule.

Items are named by handles (`a3` = the third appointment the schedule books, `e5` the fifth
Outlook event) because their real ids only exist once the run made them. The planner keeps its
own model of what is alive, so a step never acts on an item an earlier step removed.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

# Weights: what branch staff and customers do most, and how often each fault strikes.
COCONUT_OPS = {
    "book": 6,
    "reschedule": 3,
    "edit": 2,
    "reassign": 2,
    "cancel": 2,
    "block": 2,
    "move_block": 1,
    "unblock": 1,
    "tamper_busy_block": 1,  # a Coconut admin moves, retitles or deletes one of our blocks
}
OUTLOOK_OPS = {
    "create": 6,
    "move": 3,
    "retitle": 2,
    "make_private": 1,
    "toggle_free": 2,
    "cancel_event": 1,
    "delete_event": 2,
    "delete_occurrence": 1,
    "edit_projection": 2,
    "delete_projection": 1,
}
FAULTS = {
    "throttle": 3,
    "notification_drop": 2,
    "notification_duplicate": 2,
    "notification_delay": 1,
    "notification_reorder": 1,
    "subscription_expire": 1,
    "subscription_removed": 1,
    "subscription_missed": 1,
    "delta_expire": 1,
    "delivery_duplicate": 2,
    "delivery_delay": 1,
    "delivery_reorder": 1,
    "delivery_drop": 1,
    "coconut_error": 1,
    "kill_worker": 2,
    "restart_redis": 1,
    "restart_web": 1,
    "reconnect": 1,  # Disconnect (sometimes removing what the sync made), then Authorize
    "wipe_redis": 1,  # Redis loses everything; the admin authorizes again
    "restore_snapshot": 1,  # Redis restored from the backup taken after the initial sync
    # Graph as it really is (research/graph-reality.md).
    "fail_after_write": 1,  # a write carried out, answered 503: the retried create is refused
    "lifecycle_storm": 1,  # reauthorizationRequired several times in a row
    "concurrency_throttle": 1,  # 429 ApplicationThrottled, with Retry-After 1 or none
    "delta_misbehave": 1,  # one mailbox's delta pages as Graph's do on recurring series
    "notification_batch": 1,  # several notifications in one POST from now on
    "coconut_refuses": 1,  # Coconut's max_absence_days is 1 for a while: longer blocks get 422
}
FAULT_SHARE = 0.2  # of all steps

SHOW_AS = ["busy"] * 5 + ["oof", "tentative", "free", "workingElsewhere"]


@dataclass(frozen=True)
class Step:
    at: float  # seconds after the schedule starts
    kind: str
    args: dict[str, Any] = field(default_factory=dict)

    @property
    def is_fault(self) -> bool:
        return self.kind in FAULTS

    def describe(self) -> str:
        shown = " ".join(f"{k}={v}" for k, v in self.args.items())
        return f"{self.at:7.2f}s {self.kind} {shown}".rstrip()


@dataclass
class _Model:
    """What the planner believes is alive, to pick targets that exist."""

    staff: int
    appointments: dict[str, int] = field(default_factory=dict)  # handle -> primary staff index
    blocks: dict[str, int] = field(default_factory=dict)  # Coconut absence handle -> staff
    events: dict[str, tuple[int, bool]] = field(default_factory=dict)  # handle -> (mbx, series)
    made: Counter[str] = field(default_factory=Counter)

    def new(self, prefix: str) -> str:
        self.made[prefix] += 1
        return f"{prefix}{self.made[prefix]}"


def plan(seed: int, ops: int, staff: int, rate: float = 6.0) -> list[Step]:
    """`ops` steps over about ops/rate seconds: changes and, one step in five, a fault."""
    rng = random.Random(seed)
    model = _Model(staff)
    steps: list[Step] = []
    clock = 0.0
    for _ in range(ops):
        clock += rng.expovariate(rate)
        if rng.random() < FAULT_SHARE:
            kind = _pick(rng, FAULTS)
            steps.append(Step(round(clock, 3), kind, _fault_args(rng, kind, staff)))
            continue
        side = COCONUT_OPS if rng.random() < 0.5 else OUTLOOK_OPS
        step = _change(rng, model, _pick(rng, side))
        if step is not None:
            steps.append(Step(round(clock, 3), step[0], step[1]))
    return steps


def _pick(rng: random.Random, weights: dict[str, int]) -> str:
    return rng.choices(list(weights), weights=list(weights.values()))[0]


def _slot(rng: random.Random) -> dict[str, int]:
    """A time in the coming three weeks, in office hours (the appointment's zone)."""
    return {"day": rng.randint(1, 21), "hour": rng.randint(8, 17), "minute": rng.choice([0, 30])}


def _change(rng: random.Random, m: _Model, kind: str) -> tuple[str, dict[str, Any]] | None:
    """One change, or None when nothing exists yet that it could act on."""
    staff = rng.randint(1, m.staff)
    if kind == "book":
        handle = m.new("a")
        m.appointments[handle] = staff
        extra = [s for s in range(1, m.staff + 1) if s != staff and rng.random() < 0.15]
        return kind, {
            "handle": handle,
            "staff": staff,
            "extra": extra[:1],
            "service": rng.randint(1, 3),
            "client": rng.randint(1, 6),
            **_slot(rng),
        }
    if kind in ("reschedule", "edit", "reassign", "cancel"):
        if not m.appointments:
            return None
        handle = rng.choice(sorted(m.appointments))
        if kind == "reschedule":
            return kind, {"handle": handle, **_slot(rng)}
        if kind == "edit":
            return kind, {"handle": handle, "service": rng.randint(1, 3)}
        if kind == "reassign":
            m.appointments[handle] = staff
            return kind, {"handle": handle, "staff": staff}
        del m.appointments[handle]
        return kind, {"handle": handle}
    if kind == "block":
        handle = m.new("b")
        m.blocks[handle] = staff
        return kind, {
            "handle": handle,
            "staff": staff,
            "hours": rng.randint(1, 3),
            "all_day": rng.random() < 0.2,
            **_slot(rng),
        }
    if kind in ("move_block", "unblock"):
        if not m.blocks:
            return None
        handle = rng.choice(sorted(m.blocks))
        if kind == "unblock":
            del m.blocks[handle]
            return kind, {"handle": handle}
        return kind, {"handle": handle, **_slot(rng)}
    if kind == "tamper_busy_block":
        action = rng.choice(["delete", "move", "retitle"])
        return kind, {"staff": staff, "action": action, "pick": round(rng.random(), 3)}
    if kind == "create":
        handle = m.new("e")
        series = rng.random() < 0.2
        m.events[handle] = (staff, series)
        sensitivity = rng.choices(["normal", "private", "confidential"], [8, 2, 1])[0]
        return kind, {
            "handle": handle,
            "mailbox": staff,
            "series": series,
            # A daily series is what makes Graph's delta pages overflow; monthly ones are
            # relative ("the second Tuesday"), as Graph has them.
            "pattern": rng.choices(["weekly", "daily", "relativeMonthly"], [3, 1, 1])[0],
            "all_day": not series and rng.random() < 0.15,
            "days": rng.choice([1, 1, 2, 3]),  # an all-day event's length
            "hours": rng.randint(1, 2),
            "show_as": rng.choice(SHOW_AS),
            "sensitivity": sensitivity,
            **_slot(rng),
        }
    if kind in ("edit_projection", "delete_projection"):
        if not m.appointments:
            return None
        return kind, {"handle": rng.choice(sorted(m.appointments)), "hours": rng.randint(1, 3)}
    live = sorted(m.events)
    if kind == "delete_occurrence":
        live = [h for h in live if m.events[h][1]]
    if not live:
        return None
    handle = rng.choice(live)
    if kind in ("delete_event",):
        del m.events[handle]
    if kind == "move":
        return kind, {"handle": handle, "hours": rng.choice([-3, -1, 1, 2, 24, 48])}
    if kind == "toggle_free":
        return kind, {"handle": handle, "show_as": rng.choice(SHOW_AS)}
    if kind == "delete_occurrence":
        return kind, {"handle": handle, "nth": rng.randint(0, 3)}
    return kind, {"handle": handle}


# How one mailbox's delta misbehaves (the Graph emulator's delta_* faults).
DELTA_MODES = ["oversize", "repeat_link", "changing_links", "empty_pages", "unavailable"]


def _fault_args(rng: random.Random, kind: str, staff: int) -> dict[str, Any]:
    if kind == "throttle":
        return {
            "status": rng.choice([429, 429, 503]),
            "count": rng.randint(3, 15),
            "retry_after": rng.choice([0, 1, 2]),
        }
    if kind in (
        "notification_drop",
        "notification_duplicate",
        "delivery_duplicate",
        "delivery_drop",
        "delivery_delay",
        "coconut_error",
    ):
        return {"count": rng.randint(1, 4)}
    if kind == "notification_delay":
        return {"count": rng.randint(1, 4), "seconds": rng.choice([1, 2, 4])}
    if kind in ("notification_reorder", "delivery_reorder"):
        return {"batch": rng.randint(2, 4)}
    if kind.startswith("subscription_"):
        return {"mailbox": rng.randint(1, staff)}
    if kind == "fail_after_write":
        return {"count": rng.randint(1, 3)}
    if kind == "lifecycle_storm":
        return {"mailbox": rng.randint(1, staff), "times": rng.randint(3, 6)}
    if kind == "concurrency_throttle":
        return {"count": rng.randint(2, 6), "retry_after": rng.choice([1, None])}
    if kind == "delta_misbehave":
        return {"mailbox": rng.randint(1, staff), "mode": rng.choice(DELTA_MODES)}
    if kind == "notification_batch":
        return {"window": rng.choice([0.2, 0.5, 1.0]), "size": rng.randint(3, 20)}
    if kind == "restart_redis":
        return {"down": rng.choice([0.5, 1.0, 2.0])}
    if kind == "reconnect":
        return {"remove": rng.random() < 0.5}
    if kind == "coconut_refuses":
        return {"seconds": rng.choice([5, 10, 20])}
    return {}


def tally(steps: list[Step]) -> tuple[Counter[str], Counter[str]]:
    """How many changes and faults of each kind a schedule holds."""
    changes = Counter(s.kind for s in steps if not s.is_fault)
    faults = Counter(s.kind for s in steps if s.is_fault)
    return changes, faults
