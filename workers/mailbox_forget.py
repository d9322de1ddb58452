"""Job `forget_mailbox(user_id)`: a mailbox no longer matched to anyone loses its busy blocks,
its subscription and its cursor."""

from __future__ import annotations

import logging

from core import jobs, store
from core import reconcile as requests
from core.job_kinds import JobKind
from workers import busy_blocks
from workers.context import context

log = logging.getLogger(__name__)


def forget_mailbox(user_id: str) -> int:
    """A mailbox no longer matched to anyone: its busy blocks and subscription go."""
    from subscriptions import manager

    ctx = context()
    ctx.redis.delete(store.dirty_key(JobKind.FORGET_MAILBOX.kind, user_id))
    with jobs.item_lock(ctx.redis, JobKind.SYNC_MAILBOX.kind, user_id):
        if ctx.redis.hexists(store.mailbox_key(user_id), "staff_id"):
            return 0  # matched again meanwhile
        removed = 0
        for event_id in ctx.redis.hkeys(store.block_key(user_id)):
            busy_blocks.remove(ctx, user_id, event_id.decode())
            removed += 1
        record = manager.for_mailbox(ctx, user_id)
        if record is not None:
            manager.delete(ctx, record.subscription_id)
        requests.forget_cursor(ctx.redis, user_id)
    log.info("mailbox.forgotten", extra={"mailbox": user_id, "blocks": removed})
    return removed
