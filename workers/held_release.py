"""Job `release_holds(user_id)`: an admin released the busy-block removals a round held back
(workers.mass_delete_guard), so they are carried out now, under the mailbox's lock."""

from __future__ import annotations

import logging

from core import audit, jobs, store
from core.job_kinds import JobKind
from workers import busy_blocks
from workers.context import context

log = logging.getLogger(__name__)


def release_holds(user_id: str) -> int:
    """Job: carry the held removals out now (an admin released them)."""
    ctx = context()
    removed = 0
    ctx.redis.delete(store.dirty_key(JobKind.RELEASE_HOLDS.kind, user_id))
    with jobs.item_lock(ctx.redis, JobKind.SYNC_MAILBOX.kind, user_id):
        for raw in ctx.redis.smembers(store.held_key(user_id)):
            busy_blocks.remove(ctx, user_id, raw.decode())
            ctx.redis.srem(store.held_key(user_id), raw)
            removed += 1
        ctx.redis.hdel(store.mailbox_key(user_id), "held_removals")
    log.info("holds.released", extra={"mailbox": user_id, "removed": removed})
    audit.emit("busy_time.released", mailbox=user_id, removed=removed)
    return removed
