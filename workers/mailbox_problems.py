"""A mailbox's own trouble stays that staff member's: Exchange refusing one mailbox is recorded
on its User Accounts row, never the whole job's failure, and cleared by the next write."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from core import store
from workers import directory, exchange
from workers.context import WorkerContext

log = logging.getLogger(__name__)


def guard(ctx: WorkerContext, mailbox: str, action: Callable[[], object]) -> None:
    """Run the action; a mailbox Exchange refuses is that staff member's sync error."""
    try:
        action()
    except exchange.MailboxRefused as exc:
        ctx.redis.hset(store.mailbox_key(mailbox), "error", str(exc))
        staff_id = directory.staff_for(ctx, mailbox)
        if staff_id:
            ctx.redis.hset(store.staff_key(staff_id), "error", str(exc))
        log.warning("mailbox.refused", extra={"mailbox": mailbox})


def clear(ctx: WorkerContext, mailbox: str) -> None:
    """A write went through: whatever error the mailbox had is over."""
    pipe = ctx.redis.pipeline()
    pipe.hdel(store.mailbox_key(mailbox), "error")
    pipe.hset(store.mailbox_key(mailbox), "last_sync_at", int(time.time()))
    staff_id = directory.staff_for(ctx, mailbox)
    if staff_id:
        pipe.hdel(store.staff_key(staff_id), "error")
    pipe.execute()
