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
    # The write is carried out, then answered with a 5xx (`status`, 503 unless told): Graph's
    # "503 after the write", after which a client retries a create Graph already made.
    "fail_after_write": {"status", "mailbox", "method"},
    # Standing: a repeated transactionId on a create returns the first event (201), as the
    # emulator once did, instead of Graph's 400 ErrorDuplicateTransactionId.
    "transaction_returns_first": {"mailbox"},
}
_STANDING = {"forbidden", "notification_reorder", "expire_delta", "transaction_returns_first"}

# Delta paging as Graph really pages it (research/graph-reality.md item 1), on one mailbox or,
# without `mailbox`, on all: emulators.graph.delta says what each does.
KINDS.update({
    "delta_oversize": {"mailbox"},  # a series is never split: pages larger than asked
    "delta_repeat_link": {"mailbox"},  # the nextLink a page was fetched with, again
    "delta_changing_links": {"mailbox"},  # the last page again, under a new link, forever
    "delta_empty_pages": {"mailbox", "pages"},  # `pages` empty pages before each page of items
    # 503/504 (UnknownError) to delta on a mailbox holding at least `series` recurring series.
    "delta_unavailable": {"mailbox", "status", "series", "retry_after"},
})  # fmt: skip
_STANDING |= {"delta_oversize", "delta_repeat_link", "delta_changing_links", "delta_empty_pages"}

# Subscriptions and delivery on Graph's cadence (research/graph-reality.md item 5): standing
# switches, on until DELETE /faults. emulators.graph.subscriptions and .notify say what each does.
KINDS.update({
    "reauthorization_required": {"every", "mailbox"},  # each subscription, every `every` s
    "subscription_removed": {"every", "mailbox"},  # one subscription removed every `every` s
    "missed": {"mailbox"},  # dropped notifications earn their subscription a `missed`
    "notification_batch": {"window", "size"},  # notifications within `window` s in one POST
    "notification_retry": {"first", "longest", "give_up"},  # failed deliveries' schedule, s
    "subscription_page": {"size"},  # GET /subscriptions pages of `size` (Graph's own: 100)
    "allow_duplicate_subscriptions": set(),  # no 409 for a second one of a resource
    # Not standing: a 429 as Exchange answers one over MailboxConcurrency, with `Retry-After`
    # only when `retry_after` is given (emulators.graph.throttle).
    "concurrency_throttle": {"mailbox", "method", "retry_after"},
})  # fmt: skip
_STANDING |= {
    "reauthorization_required", "subscription_removed", "missed", "notification_batch",
    "notification_retry", "subscription_page", "allow_duplicate_subscriptions",
}  # fmt: skip


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
    if kind == "fail_after_write" and spec.get("status", 503) not in (500, 502, 503, 504):
        raise FaultSpecError(f"status must be 500, 502, 503 or 504, got {spec.get('status')!r}")
    if kind == "delta_unavailable" and spec.get("status", 503) not in (503, 504):
        raise FaultSpecError(f"status must be 503 or 504, got {spec.get('status')!r}")
    _number(spec, "pages", 1, integer=True)
    _number(spec, "series", 1, integer=True)
    for key in ("every", "window", "first", "longest", "give_up"):
        _number(spec, key, 0.01)
    if kind in ("notification_batch", "subscription_page"):
        _number(spec, "size", 1, integer=True)
    if kind in ("reauthorization_required", "subscription_removed") and "every" not in spec:
        raise FaultSpecError(f"{kind} needs every (seconds)")
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
