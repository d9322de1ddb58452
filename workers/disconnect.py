"""Disconnect: our subscriptions go, and if the admin asked, our items on both sides too.

Runs while the connection's credentials still work (status `disconnecting`, in which no other
job writes), then forgets the sign-in. Only what carries our mark or our mapping is removed:
Outlook events we projected and the busy blocks we wrote; nothing staff made themselves.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from msgraph.generated.models.o_data_errors.o_data_error import ODataError

from core import audit, connection, reconcile, store
from core.job_kinds import JobKind
from subscriptions import manager
from workers import busy_blocks, item_sync
from workers.context import context
from workers.projection_index import ProjectionIndex

log = logging.getLogger(__name__)


def run_disconnect(what: str = "subscriptions") -> dict[str, int]:
    """`what`: "subscriptions" (ours only) or "everything" (our events and blocks as well)."""
    ctx = context()
    # Not coalesced: nothing else clears its flag.
    ctx.redis.delete(store.dirty_key(JobKind.DISCONNECT.kind, what))
    removed = {"subscriptions": 0, "events": 0, "blocks": 0}
    for record in manager.all_local(ctx):
        try:
            manager.delete(ctx, record.subscription_id)
        except ODataError as exc:
            # Graph would not delete it now (throttled, down): it lapses on its own within
            # days, and until then our receiver refuses what it sends. A Disconnect that keeps
            # failing here would leave the connection "disconnecting", syncing nothing, for good.
            manager.forget(ctx, record.subscription_id)
            log.warning("disconnect.subscription_left", extra={
                "subscription": record.subscription_id, "status": exc.response_status_code,
            })  # fmt: skip
        removed["subscriptions"] += 1
    if what == "everything":
        index = ProjectionIndex(ctx.redis)
        for mailbox in _mailboxes_with(ctx, store.projected_key):
            for projection in index.in_mailbox(mailbox):
                item_sync.remove(ctx, projection)
                removed["events"] += 1
        for mailbox in _mailboxes_with(ctx, store.block_key):
            for event_id in ctx.redis.hkeys(store.block_key(mailbox)):
                busy_blocks.remove(ctx, mailbox, event_id.decode())
                removed["blocks"] += 1
    # Cursors die with what they describe: the next Authorize reads every mailbox whole and
    # compares it with Coconut, so the blocks removed here come back.
    reconcile.forget_cursors(ctx.redis)
    connection.mark_disconnected(ctx.redis)
    ctx.redis.hset(store.disconnect_key(), mapping={**removed, "done": 1})
    log.info("disconnect.done", extra=removed)
    audit.emit("connection.disconnected", scope=what, **removed)
    return removed


def _mailboxes_with(ctx, key: Callable[[str], str]) -> list[str]:  # type: ignore[no-untyped-def]
    prefix = key("")
    return [k.decode()[len(prefix) :] for k in ctx.redis.scan_iter(match=prefix + "*", count=500)]
