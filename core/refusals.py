"""Items a calendar refused to take, kept per mailbox until a later attempt goes through.

    exsync:refused:{user_id}   hash: Exchange event id -> JSON Refusal

A write Coconut refuses (404, 409, 422, 400) fails that item alone (workers.busy_blocks): the
rest of the round applies, the delta cursor advances, and the item is tried again on its own
with a growing delay (RETRY_DELAYS) by a full reconciliation of its mailbox. Until then the
staff member's row, the Warnings tile and `exsync status` say which item and why, in plain
words. Reading needs only Redis, so the web app and the CLI use this module; what is recorded
never carries a private subject (the label is the busy block's own title or its times).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass

import redis

from core import store

# Seconds before each further attempt: a minute, then longer, then every six hours for an item
# whose cause is outside our reach (a leave longer than Coconut's max_absence_days).
RETRY_DELAYS = (60, 300, 1_800, 7_200, 21_600)


@dataclass(frozen=True)
class Refusal:
    event_id: str
    label: str  # which item, in plain words: "busy block 'Dentist' on 2026-12-09 (UTC)"
    reason: str  # why, in plain words, with the status Coconut answered
    status: int
    attempts: int
    since: float  # when it was first refused
    retry_at: float  # when the next attempt is due

    @property
    def text(self) -> str:
        return f"{self.label} was refused: {self.reason}"


def refused(conn: redis.Redis, user_id: str) -> list[Refusal]:
    """The mailbox's refused items, oldest first."""
    raw = conn.hgetall(store.refused_key(user_id))
    found = [Refusal(**json.loads(value)) for value in raw.values()]
    return sorted(found, key=lambda r: (r.since, r.event_id))


def record(
    conn: redis.Redis, user_id: str, event_id: str, *, label: str, reason: str, status: int
) -> Refusal:
    """Count one more refusal of the item and schedule its next attempt."""
    raw = conn.hget(store.refused_key(user_id), event_id)
    now = time.time()
    before = Refusal(**json.loads(raw)) if raw else None
    attempts = before.attempts + 1 if before else 1
    delay = RETRY_DELAYS[min(attempts, len(RETRY_DELAYS)) - 1]
    refusal = Refusal(
        event_id=event_id, label=label, reason=reason, status=status, attempts=attempts,
        since=before.since if before else now, retry_at=now + delay,
    )  # fmt: skip
    conn.hset(store.refused_key(user_id), event_id, json.dumps(asdict(refusal)))
    return refusal


def clear(conn: redis.Redis, user_id: str, event_ids: set[str]) -> None:
    """The items went through, or no longer need a block: they are no longer refused."""
    if event_ids:
        conn.hdel(store.refused_key(user_id), *event_ids)


def next_retry(conn: redis.Redis, user_id: str) -> float | None:
    """When the earliest refused item of the mailbox is due again; None when none is refused."""
    found = refused(conn, user_id)
    return min((r.retry_at for r in found), default=None)
