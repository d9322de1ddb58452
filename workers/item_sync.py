"""Jobs `sync_appointment` and `sync_absence`: one Coconut item into every mailbox that shows it.

A Coconut webhook is only a hint: each job reads the item's current state from Coconut's API
and makes every assigned mailbox hold exactly the event workers.projection says, so the order
and number of deliveries do not matter. Jobs run coalesced (core.jobs): one worker per item,
and a change that lands mid-run earns one more round.

Per mailbox: the one read the planner needs (workers.projection_plan.needed_read: our mark's
events when the mapping is lost or pending, the event's changeKey when only an edit in Outlook
could call for a write), the plan, and its writes one at a time (workers.projection_writes).
"""

from __future__ import annotations

from core import jobs
from core.connection import EditPolicy
from core.job_kinds import JobKind
from core.sync_records import Projection
from workers import directory, exchange, mailbox_problems
from workers.coconut_items import templates
from workers.context import WorkerContext, context
from workers.marks import mark_value
from workers.projection import EventDraft, absence_event, appointment_event, is_live
from workers.projection_index import ProjectionIndex
from workers.projection_plan import Item, Listed, Read, needed_read, plan
from workers.projection_writes import carry_out


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
            mailbox = directory.mailbox_of(ctx, ctx.staff(staff_id))
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
        mailbox = directory.mailbox_of(ctx, ctx.staff(absence.user_id))
        if mailbox is not None:
            wanted[mailbox] = draft
    _converge(ctx, "absence", absence_id, wanted)
    return absence.version if absence is not None else None


def _converge(ctx: WorkerContext, kind: str, item_id: str, wanted: dict[str, EventDraft]) -> None:
    """Every mailbox that holds the item or should: the event goes, or is made as wanted."""
    recorded = ProjectionIndex(ctx.redis).for_item(kind, item_id)
    for mailbox in [*(m for m in recorded if m not in wanted), *wanted]:
        item = Item(kind, item_id, wanted.get(mailbox))
        mailbox_problems.guard(ctx, mailbox, lambda m=mailbox, i=item: converge(ctx, m, i))


def converge(ctx: WorkerContext, mailbox: str, item: Item) -> None:
    """Make one mailbox hold what the item wants there (no event, when its draft is None)."""
    known = ProjectionIndex(ctx.redis).for_item(item.kind, item.item_id).get(mailbox)
    keep_edits = ctx.options.edit_policy == EditPolicy.KEEP
    found = _read(ctx, mailbox, item, known, needed_read(known, item, keep_edits))
    carry_out(ctx, mailbox, plan(mailbox, item, known, found, keep_edits), batch=False)


def remove(ctx: WorkerContext, projection: Projection) -> None:
    """Our event for the projection goes from its mailbox, and the mapping with it."""
    converge(ctx, projection.mailbox, Item(projection.kind, projection.item_id, None))


def _read(
    ctx: WorkerContext, mailbox: str, item: Item, known: Projection | None, read: Read
) -> list[Listed] | None:
    if read is Read.MARKED:
        mark = mark_value(ctx.settings.deployment_id, item.kind, item.item_id)
        return list(exchange.find_marked(ctx, mailbox, mark))
    if read is Read.CHANGE_KEY:
        assert known is not None
        change_key = exchange.change_key(ctx, mailbox, known.event_id)
        return [] if change_key is None else [exchange.Written(known.event_id, change_key)]
    return None
