"""Faults the emulator can inject, armed through `POST /_emulator/faults/<kind>`.

Each fault fires either for the next `count` occurrences or for a random `share` of them, so a
test can say "the next two calls fail" (deterministic) or "a third of deliveries are duplicated"
(a soak run). Parsing is strict: an unknown kind or key is the caller's mistake, not something to
ignore, because a mistyped fault that silently does nothing makes a test pass for the wrong reason.
`Faults` holds the armed triggers (`store.faults`); the guard, the store and the listing ask it
whether one fires.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, field
from typing import Any

# kind -> {parameter: (type, default)}; the parameters each kind accepts besides count/share.
KINDS: dict[str, dict[str, tuple[type, Any]]] = {
    # API calls under /api/v2/b2b answer with this status instead of doing the work.
    "api_error": {"status": (int, 503), "retry_after": (int, 1)},
    # Collection GETs sleep this long before answering.
    "slow_page": {"seconds": (float, 2.0)},
    # Writes (POST, PATCH, DELETE) are carried out, then their answer waits this long: a client
    # that dies meanwhile never learns that its write happened.
    "slow_write": {"seconds": (float, 5.0)},
    # One collection GET for page >= 2 starts `shift` rows early, as if rows had been inserted
    # ahead of the client's position since its previous page: it sees `shift` rows twice, and
    # (the next page being normal again) misses as many. Offset paging promises no better.
    "page_drift": {"shift": (int, 1)},
    # Writes carrying If-Match answer 409 even when the version matches.
    "if_match_conflict": {},
    # Webhook deliveries: never sent.
    "delivery_drop": {},
    # Webhook deliveries: sent twice with the same delivery id.
    "delivery_duplicate": {},
    # Webhook deliveries: first attempt held back this long.
    "delivery_delay": {"seconds": (float, 2.0)},
    # Webhook deliveries: held, then released newest first once `batch` are held or the oldest
    # has waited `hold_seconds`.
    "delivery_reorder": {"batch": (int, 2), "hold_seconds": (float, 2.0)},
}

API_ERROR_STATUSES = {429, 500, 502, 503}


class FaultSpecError(ValueError):
    """A control request asked for a fault that does not exist or with bad parameters."""


@dataclass
class Trigger:
    """One armed fault: fires for the next `count` occurrences, or for a `share` of them."""

    kind: str
    count: int | None
    share: float | None
    params: dict[str, Any] = field(default_factory=dict)
    fired: int = 0

    def fire(self, rng: random.Random) -> bool:
        """Decide for one occurrence; consumes one of `count` when it fires."""
        if self.count is not None:
            if self.count <= 0:
                return False
            self.count -= 1
            self.fired += 1
            return True
        if self.share is not None and rng.random() < self.share:
            self.fired += 1
            return True
        return False

    @property
    def spent(self) -> bool:
        return self.count is not None and self.count <= 0

    def as_json(self) -> dict[str, Any]:
        return {"count": self.count, "share": self.share, "fired": self.fired, **self.params}


class Faults:
    """The armed faults by kind; shares the store's lock and random source."""

    def __init__(self, lock: threading.RLock, rng: random.Random) -> None:
        self.lock = lock
        self.rng = rng
        self.armed: dict[str, Trigger] = {}

    def arm(self, trigger: Trigger) -> dict[str, Any]:
        """Arm (or re-arm) one kind; what `POST /_emulator/faults/<kind>` answers."""
        with self.lock:
            self.armed[trigger.kind] = trigger
            return {"fault": trigger.kind, **trigger.as_json()}

    def clear(self) -> None:
        with self.lock:
            self.armed.clear()

    def fire(self, kind: str) -> dict[str, Any] | None:
        """If fault `kind` is armed and fires now, its parameters; spent faults disarm."""
        with self.lock:
            trigger = self.armed.get(kind)
            if trigger is None or not trigger.fire(self.rng):
                return None
            if trigger.spent:
                del self.armed[kind]
            return trigger.params

    def describe(self) -> dict[str, Any]:
        with self.lock:
            return {kind: t.as_json() for kind, t in self.armed.items()}


def parse_trigger(kind: str, body: Any) -> Trigger:
    """Build a Trigger from a control request body, or raise FaultSpecError naming the problem."""
    if kind not in KINDS:
        raise FaultSpecError(f"unknown fault kind, got {kind!r}; known: {sorted(KINDS)}")
    if not isinstance(body, dict):
        raise FaultSpecError(f"body must be a JSON object, got {type(body).__name__}")
    allowed = {"count", "share", *KINDS[kind]}
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise FaultSpecError(f"unknown keys for {kind}: {unknown}; allowed: {sorted(allowed)}")
    count, share = body.get("count"), body.get("share")
    if (count is None) == (share is None):
        raise FaultSpecError("give exactly one of count (next N) or share (0..1)")
    if count is not None and (not _is_int(count) or count < 1):
        raise FaultSpecError(f"count must be a positive integer, got {count!r}")
    if share is not None and (not _is_number(share) or not 0 < share <= 1):
        raise FaultSpecError(f"share must be a number in (0, 1], got {share!r}")
    params: dict[str, Any] = {}
    for name, (typ, default) in KINDS[kind].items():
        value = body.get(name, default)
        ok = _is_int(value) if typ is int else _is_number(value)
        if not ok or value < 0:
            raise FaultSpecError(f"{name} must be a non-negative {typ.__name__}, got {value!r}")
        params[name] = typ(value)
    if kind == "api_error" and params["status"] not in API_ERROR_STATUSES:
        raise FaultSpecError(
            f"status must be one of {sorted(API_ERROR_STATUSES)}, got {params['status']!r}"
        )
    if kind == "delivery_reorder" and params["batch"] < 2:
        raise FaultSpecError(f"batch must be at least 2, got {params['batch']!r}")
    return Trigger(kind=kind, count=count, share=float(share) if share else None, params=params)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
