"""The initial sync after Authorize: everything that already exists is created on the other side.

For every Coconut staff member who takes appointments and has a mailbox, it subscribes to the
mailbox (app-only mode) and queues one `project_staff` job (workers.staff_projection): the
staff member's upcoming appointments and Coconut absences go into Outlook in `$batch` calls,
after one listing of what the mailbox already holds, instead of a job and a look-up per item.
Then it queues each mailbox's delta round into Coconut busy time. The delta rounds are queued
after every staff member's bulk job, so a round usually reads the mailbox once our events are
in it and recognised (their changeKeys stored), instead of meeting them half-written.

Beyond the subscription nothing here writes anywhere itself, so a crash loses nothing (RQ
retries this job, and a staff member already listed is skipped) and nothing doubles (the jobs
are idempotent and coalesced per staff member and per mailbox).

Progress is read, not counted (core.progress): one entry per item of each staff member, cleared
by their bulk job, and one for their mailbox's delta round.
"""

from __future__ import annotations

import logging
import time

import redis
from rq import get_current_job

from core import jobs, reconcile, store
from core.job_kinds import JobKind
from core.progress import RUN_KEY
from subscriptions import manager
from workers import directory, staff_projection
from workers.coconut_items import items_of
from workers.context import context

log = logging.getLogger(__name__)


def run_initial_sync(connection_name: str = "exchange") -> int:
    """Queue every staff member's existing items (coalesced like every job: a second Authorize
    while one runs earns one more pass, not two at once)."""
    ctx = context()
    return jobs.run_coalesced(
        ctx.redis,
        JobKind.INITIAL_SYNC,
        connection_name,
        lambda _: _queue_everything(connection_name),
    )


def _queue_everything(connection_name: str) -> int:
    ctx = context()
    _start_or_resume(ctx.redis)
    covered = directory.staff_mailboxes(ctx)
    ctx.redis.hset(RUN_KEY, "staff", ",".join(str(staff.id) for staff, _ in covered))
    for staff, mailbox in covered:
        staff_id = str(staff.id)
        if ctx.redis.hget(store.initial_sync_staff_key(staff_id), "listed"):
            continue  # a resumed run: this staff member's items are queued already
        if ctx.impersonation:
            manager.subscribe(ctx, mailbox.user_id)  # real-time from now on; delegated mode polls
        members = [
            staff_projection.progress_member(staff_id, item.kind, item.item_id)
            for item in items_of(ctx, staff)
        ]
        pipe = ctx.redis.pipeline()
        for member in members:
            pipe.incr(store.dirty_key(*member.split(":", 1)))
        pipe.incr(store.dirty_key("mailbox", mailbox.user_id))  # pending until its round ran
        pipe.delete(store.initial_sync_items_key(staff_id))
        pipe.sadd(store.initial_sync_items_key(staff_id), f"mailbox:{mailbox.user_id}", *members)
        pipe.hset(
            store.initial_sync_staff_key(staff_id),
            mapping={"listed": 1, "address": mailbox.address, "mailbox": mailbox.user_id},
        )
        pipe.execute()
        jobs.ensure_queued(ctx.queue, JobKind.PROJECT_STAFF, staff_id)
    for _, mailbox in covered:
        # A full round: after an Authorize nothing a cursor says may be trusted (a disconnect
        # removed blocks, another account signed in, Redis was restored from a backup).
        reconcile.mark(ctx.redis, mailbox.user_id, "authorize")
        jobs.ensure_queued(ctx.queue, JobKind.SYNC_MAILBOX, mailbox.user_id)
    ctx.redis.hset(RUN_KEY, mapping={"state": "queued", "queued_at": int(time.time())})
    log.info("initial_sync.queued", extra={"connection": connection_name, "staff": len(covered)})
    return len(covered)


def _start_or_resume(conn: redis.Redis) -> None:
    """A retry of the same job resumes; a new Authorize starts over."""
    job = get_current_job()
    run_id = f"{job.id}@{job.created_at.timestamp()}" if job and job.created_at else "manual"
    if (conn.hget(RUN_KEY, "run_id") or b"").decode() != run_id:
        for staff_id in filter(None, (conn.hget(RUN_KEY, "staff") or b"").decode().split(",")):
            # The old run's item markers go with it (its mailbox entries are real dirty flags).
            members = [m.decode() for m in conn.smembers(store.initial_sync_items_key(staff_id))]
            stale = [store.dirty_key(*m.split(":", 1)) for m in members
                     if m.startswith(f"{staff_projection.PROGRESS_KIND}:")]  # fmt: skip
            conn.delete(
                store.initial_sync_staff_key(staff_id),
                store.initial_sync_items_key(staff_id),
                *stale,
            )
        conn.delete(RUN_KEY)
    conn.hset(
        RUN_KEY, mapping={"state": "running", "run_id": run_id, "started_at": int(time.time())}
    )
