"""Jobs that project Coconut-owned items into Outlook: appointments and Coconut absences.

A Coconut webhook is only a hint: each job reads the item's current state from Coconut's API
and makes every assigned mailbox hold exactly the event `project(item)` says, so the order and
number of deliveries do not matter. Jobs run coalesced (core.jobs): one worker per item, and a
change that lands mid-run earns one more round.

Per mailbox the round is: find our event (the mapping, else our mark in the mailbox, never a
new one while one exists) → write it only when it differs from what we last wrote or a staff
member edited it → remember its `changeKey`, so the mailbox sync recognises our own write.

A create is recorded as pending before it is made: a worker that dies between Graph's answer
and the mapping leaves an event only our mark can find, and the pending record says where to
look, also once the mailbox no longer wants it (the appointment was reassigned or cancelled
meanwhile) and the event must go.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from core import audit, jobs, store
from core.coconut_models import Staff
from core.connection import EditPolicy
from core.job_kinds import PROJECTION_JOBS, JobKind
from core.marks import Projection, ProjectionIndex, mark_value, transaction_id
from workers import directory, exchange
from workers.context import WorkerContext, context
from workers.projection import EventDraft, Templates, absence_event, appointment_event, is_live

log = logging.getLogger(__name__)

# Coconut's updated_at and our clock differ a little; re-reading a few minutes costs nothing.
RECONCILE_OVERLAP = timedelta(minutes=5)


def sync_appointment(appointment_id: str) -> int:
    """Make every assigned mailbox show the appointment as Coconut has it now."""
    ctx = context()
    return jobs.run_coalesced(
        ctx.redis,
        JobKind.SYNC_APPOINTMENT,
        appointment_id,
        lambda _: _appointment_round(ctx, appointment_id),
    )


def sync_absence(absence_id: str) -> int:
    """Make the staff member's mailbox show a Coconut absence as a busy event, or not at all."""
    ctx = context()
    return jobs.run_coalesced(
        ctx.redis, JobKind.SYNC_ABSENCE, absence_id, lambda _: _absence_round(ctx, absence_id)
    )


def sync_staff(staff_id: str) -> int:
    """A staff member changed (email, takes appointments, active): re-project their items.

    The appointments' own jobs decide, per mailbox, what stays: a staff member who no longer
    takes appointments, or whose email no longer matches a mailbox, loses our projections.
    Coalesced like every job queued through `ensure_queued` (a user.updated burst costs one
    round, and its dirty flag is cleared).
    """
    ctx = context()
    return jobs.run_coalesced(
        ctx.redis, JobKind.SYNC_STAFF, staff_id, lambda _: _staff_round(ctx, staff_id)
    )


def _staff_round(ctx: WorkerContext, staff_id: str) -> int:
    ctx.redis.incr(store.staff_epoch_key())
    ctx.redis.hdel(store.staff_key(staff_id), "checked_at")
    jobs.ensure_queued(ctx.queue, JobKind.SYNC_STAFF_MAILBOX, staff_id)
    since = datetime.now(UTC) - timedelta(days=ctx.options.sync_past_days)
    queued = 0
    for appointment in ctx.coconut.appointments(user=int(staff_id), start_after=since):
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
    ctx.redis.delete(store.dirty_key("staff_mailbox", staff_id))
    user_id = mailbox_of(ctx, ctx.coconut.get_user(int(staff_id)))
    if user_id is None or not ctx.syncing:
        return
    if ctx.impersonation:
        manager.ensure(ctx, user_id)
    # A new time zone or match is the mailbox round's to notice (its `covers`): a full round.
    jobs.ensure_queued(ctx.queue, JobKind.SYNC_MAILBOX, user_id)


def reconcile_coconut(item: str = "all") -> int:
    """The safety net for lost Coconut webhooks: queue every item changed since the last check,
    and every projected item Coconut no longer lists (deleted without a webhook)."""
    ctx = context()
    return jobs.run_coalesced(
        ctx.redis, JobKind.RECONCILE_COCONUT, item, lambda _: _reconcile_round(ctx)
    )


def _reconcile_round(ctx: WorkerContext) -> int:
    checkpoint_key = store.coconut_reconciled_key()
    started = datetime.now(UTC)
    raw = ctx.redis.get(checkpoint_key)
    since = datetime.fromtimestamp(float(raw), UTC) - RECONCILE_OVERLAP if raw else None
    window_start = started - timedelta(days=ctx.options.sync_past_days)
    # Appointments and absences number their ids apart: appointment 36 is not absence 36.
    queued: set[tuple[str, str]] = set()
    for appointment in ctx.coconut.appointments(updated_since=since, start_after=window_start):
        queued.add(("appointment", str(appointment.id)))
    for absence in ctx.coconut.absences(source="coconut"):
        if since is None or absence.updated_at >= since:
            queued.add(("absence", str(absence.id)))
    for kind in ("appointment", "absence"):
        queued |= {(kind, item_id) for item_id in _projected_items(ctx, kind)}
    for kind, item_id in sorted(queued):
        jobs.ensure_queued(ctx.queue, PROJECTION_JOBS[kind], item_id)
    ctx.redis.set(checkpoint_key, started.timestamp())
    log.info("reconcile.coconut", extra={"queued": len(queued), "full": since is None})
    return len(queued)


# ---------------------------------------------------------------- rounds


def _appointment_round(ctx: WorkerContext, appointment_id: str) -> int | None:
    """Returns the version read (core.jobs.run_coalesced), None when there was none to read."""
    if not ctx.syncing:
        return None  # the initial sync after the next Authorize brings everything back in line
    appointment = ctx.coconut.get_appointment(int(appointment_id))
    wanted: dict[str, EventDraft] = {}
    if is_live(appointment):
        assert appointment is not None
        draft = appointment_event(appointment, ctx.settings.coconut_app_url, templates(ctx))
        for staff_id in appointment.staff_ids:
            mailbox = mailbox_of(ctx, ctx.staff(staff_id))
            if mailbox is not None:
                wanted[mailbox] = draft
    _converge(ctx, "appointment", appointment_id, wanted)
    return appointment.version if appointment is not None else None


def _absence_round(ctx: WorkerContext, absence_id: str) -> int | None:
    if not ctx.syncing:
        return None
    absence = ctx.coconut.get_absence(int(absence_id))
    wanted: dict[str, EventDraft] = {}
    draft = absence_event(absence) if absence is not None else None
    if absence is not None and draft is not None:
        mailbox = mailbox_of(ctx, ctx.staff(absence.user_id))
        if mailbox is not None:
            wanted[mailbox] = draft
    _converge(ctx, "absence", absence_id, wanted)
    return absence.version if absence is not None else None


def _converge(ctx: WorkerContext, kind: str, item_id: str, wanted: dict[str, EventDraft]) -> None:
    """Remove the item's events from mailboxes that should not have one, upsert the rest."""
    index = ProjectionIndex(ctx.redis)
    current = index.for_item(kind, item_id)
    for mailbox, projection in current.items():
        if mailbox not in wanted:
            guarded(ctx, mailbox, lambda p=projection: remove_projection(ctx, index, p))
    for mailbox, draft in wanted.items():
        guarded(ctx, mailbox, lambda m=mailbox, d=draft: _upsert(ctx, index, kind, item_id, m, d))


def _upsert(
    ctx: WorkerContext, index: ProjectionIndex, kind: str, item_id: str, mailbox: str,
    draft: EventDraft,
) -> None:  # fmt: skip
    mark = mark_value(ctx.settings.deployment_id, kind, item_id)
    recorded = index.for_item(kind, item_id).get(mailbox)
    known = recorded
    if recorded is None or recorded.pending:
        known = _adopt(ctx, index, mark, mailbox, recorded.generation if recorded else 0)
    # Same content as we last wrote, yet a write is due: a staff member edited or deleted it.
    restoring = known is not None and known.digest == draft.digest
    if restoring and ctx.options.edit_policy == EditPolicy.KEEP:
        return  # a staff member's edit stands until the item changes in Coconut
    if known is not None:
        if restoring and exchange.change_key(ctx, mailbox, known.event_id) == known.change_key:
            return
        written = exchange.update(ctx, mailbox, known.event_id, draft)
        if written is not None:
            index.save(_projection(known, written, draft), replaces=known)
            clear_problem(ctx, mailbox)
            _written_event(kind, item_id, mailbox, written, "restored" if restoring else "updated")
            return
        log.info("projection.recreated", extra={"kind": kind, "item": item_id, "mailbox": mailbox})
    if known is not None:
        generation = known.generation + 1  # that event is gone: a new transactionId
    else:  # a pending create that left nothing behind is made again with the same one
        generation = recorded.generation if recorded is not None else 0
    pending = Projection(kind, item_id, mailbox, "", "", generation)
    index.save(pending, replaces=known)
    tx = transaction_id(ctx.settings.deployment_id, kind, item_id, mailbox, generation)
    written = exchange.create(ctx, mailbox, draft, mark, tx)
    fresh = Projection(kind, item_id, mailbox, written.event_id, written.change_key, generation)
    index.save(_projection(fresh, written, draft), replaces=pending)
    clear_problem(ctx, mailbox)
    _written_event(kind, item_id, mailbox, written, "restored" if restoring else "projected")


def _written_event(
    kind: str, item_id: str, mailbox: str, written: exchange.Written, what: str
) -> None:
    """`appointment.projected|updated`, `absence.projected|updated`, or, for a staff member's
    edit or deletion put back, `projection.restored`."""
    key = "projection.restored" if what == "restored" else f"{kind}.{what}"
    audit.emit(key, kind=kind, item_id=item_id, mailbox=mailbox, event_id=written.event_id)


def _adopt(
    ctx: WorkerContext, index: ProjectionIndex, mark: str, mailbox: str, generation: int = 0
) -> Projection | None:
    """Rebuild a lost mapping from our mark; extra copies (a crash between two creates of
    different generations) are deleted so one event remains."""
    found = exchange.find_marked(ctx, mailbox, mark)
    if not found:
        return None
    keep, *extra = found
    for duplicate in extra:
        exchange.delete(ctx, mailbox, duplicate.event_id)
    _, kind, item_id = mark.split(":")
    adopted = Projection(kind, item_id, mailbox, keep.event_id, keep.change_key, generation)
    index.save(adopted)
    log.info("projection.adopted", extra={"kind": kind, "item": item_id, "mailbox": mailbox})
    audit.emit(
        "projection.adopted", kind=kind, item_id=item_id, mailbox=mailbox,
        event_id=keep.event_id, duplicates_removed=len(extra),
    )  # fmt: skip
    return adopted


def remove_projection(ctx: WorkerContext, index: ProjectionIndex, projection: Projection) -> None:
    """Delete our event from the mailbox and forget it."""
    removed = [projection.event_id]
    if projection.pending:  # the create may have happened: our mark says where it went
        mark = mark_value(ctx.settings.deployment_id, projection.kind, projection.item_id)
        removed = [found.event_id for found in exchange.find_marked(ctx, projection.mailbox, mark)]
    for event_id in removed:
        exchange.delete(ctx, projection.mailbox, event_id)
    index.remove(projection)
    for event_id in removed:
        audit.emit(
            f"{projection.kind}.removed", kind=projection.kind, item_id=projection.item_id,
            mailbox=projection.mailbox, event_id=event_id,
        )  # fmt: skip


def _projection(base: Projection, written: exchange.Written, draft: EventDraft) -> Projection:
    return Projection(
        base.kind, base.item_id, base.mailbox, written.event_id, written.change_key,
        base.generation, draft.digest,
    )  # fmt: skip


# ---------------------------------------------------------------- staff and their mailboxes


def mailbox_of(ctx: WorkerContext, staff: Staff | None) -> str | None:
    """The staff member's mailbox when the sync covers them; else a warning says why not."""
    if staff is None:
        return None
    if not (staff.takes_appointments and staff.active):
        ctx.redis.hset(
            store.staff_key(str(staff.id)),
            "warning",
            "no longer takes appointments in Coconut: their Outlook projections were removed",
        )
        return None
    if not directory.enabled(ctx, str(staff.id)):
        return None
    mailbox = directory.mailbox_for(ctx, str(staff.id), staff.email)
    return mailbox.user_id if mailbox is not None else None


def guarded(ctx: WorkerContext, mailbox: str, action) -> None:  # type: ignore[no-untyped-def]
    """A mailbox Exchange refuses is that staff member's sync error, not the whole job's."""
    try:
        action()
    except exchange.MailboxRefused as exc:
        ctx.redis.hset(store.mailbox_key(mailbox), "error", str(exc))
        staff_id = directory.staff_for(ctx, mailbox)
        if staff_id:
            ctx.redis.hset(store.staff_key(staff_id), "error", str(exc))
        log.warning("mailbox.refused", extra={"mailbox": mailbox})


def clear_problem(ctx: WorkerContext, mailbox: str) -> None:
    """A write went through: whatever error the mailbox had is over."""
    pipe = ctx.redis.pipeline()
    pipe.hdel(store.mailbox_key(mailbox), "error")
    pipe.hset(store.mailbox_key(mailbox), "last_sync_at", int(time.time()))
    staff_id = directory.staff_for(ctx, mailbox)
    if staff_id:
        pipe.hdel(store.staff_key(staff_id), "error")
    pipe.execute()


def _projections_of_staff(ctx: WorkerContext, staff_id: str) -> list[Projection]:
    user_id = ctx.redis.hget(store.staff_key(staff_id), "user_id")
    return ProjectionIndex(ctx.redis).in_mailbox(user_id.decode()) if user_id else []


def _projected_items(ctx: WorkerContext, kind: str) -> set[str]:
    prefix = store.projection_key(kind, "")
    return {
        key.decode()[len(prefix) :] for key in ctx.redis.scan_iter(match=prefix + "*", count=500)
    }


def templates(ctx: WorkerContext) -> Templates:
    s = ctx.settings
    body = Path(s.event_body_template).read_text() if s.event_body_template else Templates.body
    return Templates(subject=s.event_subject_template or Templates.subject, body=body)
