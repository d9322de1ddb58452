"""Jobs `sync_staff` and `sync_staff_mailbox`: a staff member changed in Coconut (email, takes
appointments, active, time zone), so their mailbox is matched again and their items' own jobs
decide, per mailbox, what stays."""

from __future__ import annotations

from core import jobs, store
from core.job_kinds import PROJECTION_JOBS, JobKind
from core.sync_records import Projection
from workers import directory
from workers.coconut_items import window_start
from workers.context import WorkerContext, context
from workers.projection_index import ProjectionIndex


def sync_staff(staff_id: str) -> int:
    """Re-project the staff member's items: one who no longer takes appointments, or whose
    email no longer matches a mailbox, loses our projections. Coalesced like every job queued
    through `ensure_queued` (a user.updated burst costs one round)."""
    ctx = context()
    return jobs.run_coalesced(
        ctx.redis, JobKind.SYNC_STAFF, staff_id, lambda _: _staff_round(ctx, staff_id)
    )


def _staff_round(ctx: WorkerContext, staff_id: str) -> int:
    ctx.redis.incr(store.staff_epoch_key())
    ctx.redis.hdel(store.staff_key(staff_id), "checked_at")
    jobs.ensure_queued(ctx.queue, JobKind.SYNC_STAFF_MAILBOX, staff_id)
    queued = 0
    for appointment in ctx.coconut.appointments(user=int(staff_id), start_after=window_start(ctx)):
        jobs.ensure_queued(ctx.queue, JobKind.SYNC_APPOINTMENT, str(appointment.id))
        queued += 1
    for absence in ctx.coconut.absences(user=int(staff_id), source="coconut"):
        jobs.ensure_queued(ctx.queue, JobKind.SYNC_ABSENCE, str(absence.id))
        queued += 1
    # Items whose projection is in a mailbox but no longer list this staff member.
    for projection in _projections_of_staff(ctx, staff_id):
        jobs.ensure_queued(ctx.queue, PROJECTION_JOBS[projection.kind], projection.item_id)
        queued += 1
    return queued


def sync_staff_mailbox(staff_id: str) -> None:
    """(Re)match the staff member's mailbox; a covered one is subscribed and read."""
    from subscriptions import manager

    ctx = context()
    ctx.redis.delete(store.dirty_key(JobKind.SYNC_STAFF_MAILBOX.kind, staff_id))
    user_id = directory.mailbox_of(ctx, ctx.coconut.get_user(int(staff_id)))
    if user_id is None or not ctx.syncing:
        return
    if ctx.impersonation:
        manager.subscribe(ctx, user_id)
    # A new time zone or match is the mailbox round's to notice (its `covers`): a full round.
    jobs.ensure_queued(ctx.queue, JobKind.SYNC_MAILBOX, user_id)


def _projections_of_staff(ctx: WorkerContext, staff_id: str) -> list[Projection]:
    user_id = ctx.redis.hget(store.staff_key(staff_id), "user_id")
    return ProjectionIndex(ctx.redis).in_mailbox(user_id.decode()) if user_id else []
