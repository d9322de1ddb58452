"""Removals held for an admin: a round that would delete most of a mailbox's busy blocks waits.

A mass deletion is more often a fault (a mailbox moved, a permission pulled, a calendar
emptied by mistake) than intent, and busy time removed in error lets customers book over real
meetings. So when one round would remove more than EXSYNC_HOLD_SHARE of a mailbox's blocks
(and at least EXSYNC_HOLD_MIN_BLOCKS), those removals are kept in Redis and the mailbox is
flagged until an admin releases them (`exsync holds release`, or the admin API) or discards
them (the blocks stay).

Where they are kept, and reading or discarding them: core.held_removals; releasing them is
the job workers.held_release.
"""

from __future__ import annotations

import redis

from core import audit, store
from core.settings import Settings


def should_hold(removing: int, total: int, settings: Settings) -> bool:
    return removing >= settings.hold_min_blocks and removing > settings.hold_share * total


def hold(conn: redis.Redis, user_id: str, event_ids: list[str], total: int) -> None:
    """Keep these removals for an admin; `total` is how many blocks the mailbox has."""
    pipe = conn.pipeline()
    pipe.sadd(store.held_key(user_id), *event_ids)
    pipe.execute()
    held = conn.scard(store.held_key(user_id))
    conn.hset(store.mailbox_key(user_id), "held_removals", held)
    audit.emit("busy_time.held", mailbox=user_id, removals=len(event_ids), blocks=total, held=held)
