"""Faults armed through `POST /_emulator/faults`: what kind, on which mailbox, how often.

A fault fires either for the next `count` occurrences or for a random `share` of them; an armed
`forbidden` or `expire_delta` fault is a standing condition instead. Specs are checked strictly
(unknown kind or key → FaultSpecError → 400) so a typo in a test fails loudly.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, field
from typing import Any

# kind -> keys it accepts beyond share/count
KINDS: dict[str, set[str]] = {
    # `method` narrows it to one HTTP method (e.g. the creates inside a $batch, not its reads).
    "throttle": {"retry_after", "mailbox", "status", "method"},
    "notification_drop": set(),
    "notification_duplicate": set(),
    "notification_delay": {"seconds"},
    "notification_reorder": {"batch", "hold_seconds"},
    "forbidden": {"mailbox"},
    "expire_delta": {"mailbox"},
    # The request is carried out, then its answer waits: a client that dies meanwhile never
    # learns that its write happened (what transactionId and our mark are for).
    "slow_response": {"seconds", "mailbox"},
}
_STANDING = {"forbidden", "notification_reorder", "expire_delta"}


class FaultSpecError(ValueError):
    """A fault spec the emulator cannot arm."""


@dataclass
class Fault:
    kind: str
    params: dict[str, Any]
    count: int | None = None
    share: float | None = None

    def fires(self) -> bool:
        if self.count is not None:
            if self.count <= 0:
                return False
            self.count -= 1
            return True
        return random.random() < (self.share if self.share is not None else 1.0)


def _number(spec: dict[str, Any], key: str, low: float, integer: bool = False) -> None:
    value = spec.get(key)
    if value is None:
        return
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or value < low:
        raise FaultSpecError(f"{key} must be a number >= {low}, got {value!r}")


def parse(spec: Any) -> Fault:
    """A Fault from a control-API body; FaultSpecError names what is wrong."""
    if not isinstance(spec, dict):
        raise FaultSpecError(f"expected a JSON object, got {spec!r}")
    kind = spec.get("kind")
    if kind not in KINDS:
        raise FaultSpecError(f"unknown fault kind {kind!r}; known: {sorted(KINDS)}")
    allowed = KINDS[kind] | {"kind"} | ({"share", "count"} if kind not in _STANDING else set())
    unknown = set(spec) - allowed
    if unknown:
        raise FaultSpecError(f"unknown keys for {kind}: {sorted(unknown)}")
    if "share" in spec and "count" in spec:
        raise FaultSpecError("give share or count, not both")
    _number(spec, "share", 0)
    if spec.get("share") is not None and spec["share"] > 1:
        raise FaultSpecError(f"share must be between 0 and 1, got {spec['share']!r}")
    _number(spec, "count", 1, integer=True)
    _number(spec, "retry_after", 0, integer=True)
    _number(spec, "seconds", 0)
    _number(spec, "batch", 2, integer=True)
    _number(spec, "hold_seconds", 0)
    if kind == "throttle" and spec.get("status", 429) not in (429, 503):
        raise FaultSpecError(f"status must be 429 or 503, got {spec.get('status')!r}")
    if "method" in spec and spec["method"] not in ("GET", "POST", "PATCH", "PUT", "DELETE"):
        raise FaultSpecError(f"method must be an HTTP method in capitals, got {spec['method']!r}")
    if "mailbox" in spec and not isinstance(spec["mailbox"], str):
        raise FaultSpecError(f"mailbox must be a user id, got {spec['mailbox']!r}")
    if kind == "forbidden" and "mailbox" not in spec:
        raise FaultSpecError("forbidden needs mailbox (a user id)")
    if kind in ("notification_delay", "slow_response") and "seconds" not in spec:
        raise FaultSpecError(f"{kind} needs seconds")
    if kind == "notification_reorder" and "batch" not in spec:
        raise FaultSpecError("notification_reorder needs batch")
    params = {k: v for k, v in spec.items() if k not in ("kind", "share", "count")}
    return Fault(kind, params, spec.get("count"), spec.get("share"))


@dataclass
class Faults:
    """The armed faults; all methods are thread-safe."""

    armed: list[Fault] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def arm(self, fault: Fault) -> None:
        with self._lock:
            self.armed.append(fault)

    def clear(self) -> None:
        with self._lock:
            self.armed.clear()

    def take(
        self, kind: str, mailbox: str | None = None, method: str | None = None
    ) -> Fault | None:
        """The first armed fault of `kind` that applies to `mailbox` (and `method`) and fires
        now."""
        with self._lock:
            for fault in self.armed:
                if fault.kind != kind:
                    continue
                target = fault.params.get("mailbox")
                if target is not None and target != mailbox:
                    continue
                if fault.params.get("method") not in (None, method):
                    continue
                if fault.fires():
                    return fault
        return None

    def standing(self, kind: str) -> list[Fault]:
        with self._lock:
            return [f for f in self.armed if f.kind == kind]

    def remove(self, fault: Fault) -> None:
        with self._lock:
            if fault in self.armed:
                self.armed.remove(fault)

    def describe(self) -> list[dict[str, Any]]:
        with self._lock:
            return [
                {"kind": f.kind, **f.params, "count": f.count, "share": f.share} for f in self.armed
            ]
