"""The initial sync after Authorize: everything that already exists is created on the other side.

For every Coconut staff member who takes appointments and has a mailbox, it subscribes to the
mailbox (app-only mode) and queues the same coalesced jobs the webhooks queue: each upcoming
appointment and Coconut absence into Outlook, the mailbox's delta round into Coconut busy time.
Beyond the subscription nothing here writes anywhere itself, so a crash loses nothing (RQ
retries this job, and a staff member already listed is skipped) and nothing doubles (the jobs
are idempotent and coalesced per item).

Progress is read, not counted (core.progress).
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta

import redis
from rq import get_current_job

from core import jobs
from core.progress import RUN_KEY, items_key, user_key
from subscriptions import manager
from workers import directory
from workers.appointments import SYNC_ABSENCE, SYNC_APPOINTMENT
from workers.context import context

log = logging.getLogger(__name__)

SYNC_MAILBOX = "workers.mailboxes.sync_mailbox"


def run_initial_sync(connection_name: str = "exchange") -> int:
    """Queue every staff member's existing items (coalesced like every job: a second Authorize
    while one runs earns one more pass, not two at once)."""
    ctx = context()
    return jobs.run_coalesced(
        ctx.redis, "initial_sync", connection_name, lambda _: _queue_everything(connection_name)
    )


def _queue_everything(connection_name: str) -> int:
    ctx = context()
    _start_or_resume(ctx.redis)
    since = datetime.now(UTC) - timedelta(days=ctx.settings.sync_past_days)
    covered = directory.staff_mailboxes(ctx)
    ctx.redis.hset(RUN_KEY, "staff", ",".join(str(staff.id) for staff, _ in covered))
    for staff, mailbox in covered:
        staff_id = str(staff.id)
        if ctx.redis.hget(user_key(staff_id), "listed"):
            continue  # a resumed run: this staff member's items are queued already
        if ctx.impersonation:
            manager.ensure(ctx, mailbox.user_id)  # real-time from now on; delegated mode polls
        items = [("mailbox", mailbox.user_id, SYNC_MAILBOX)]
        items += [
            ("appointment", str(a.id), SYNC_APPOINTMENT)
            for a in ctx.coconut.appointments(user=staff.id, start_after=since)
        ]
        items += [
            ("absence", str(a.id), SYNC_ABSENCE)
            for a in ctx.coconut.absences(user=staff.id, source="coconut")
        ]
        for kind, item, func in items:
            jobs.ensure_queued(ctx.queue, func, kind, item)
        pipe = ctx.redis.pipeline()
        pipe.delete(items_key(staff_id))
        pipe.sadd(items_key(staff_id), *(f"{kind}:{item}" for kind, item, _ in items))
        pipe.hset(
            user_key(staff_id),
            mapping={"listed": 1, "address": mailbox.address, "mailbox": mailbox.user_id},
        )
        pipe.execute()
    ctx.redis.hset(RUN_KEY, mapping={"state": "queued", "queued_at": int(time.time())})
    log.info("initial_sync.queued", extra={"connection": connection_name, "staff": len(covered)})
    return len(covered)


def _start_or_resume(conn: redis.Redis) -> None:
    """A retry of the same job resumes; a new Authorize starts over."""
    job = get_current_job()
    run_id = f"{job.id}@{job.created_at.timestamp()}" if job and job.created_at else "manual"
    if (conn.hget(RUN_KEY, "run_id") or b"").decode() != run_id:
        for staff_id in filter(None, (conn.hget(RUN_KEY, "staff") or b"").decode().split(",")):
            conn.delete(user_key(staff_id), items_key(staff_id))
        conn.delete(RUN_KEY)
    conn.hset(
        RUN_KEY, mapping={"state": "running", "run_id": run_id, "started_at": int(time.time())}
    )
