"""What Coconut wants shown in Outlook: a staff member's items as event drafts, rendered with
the admin's subject and body templates (workers.projection holds the rules)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from core.coconut.models import Staff
from workers.context import WorkerContext
from workers.projection import Templates, absence_event, appointment_event, is_live
from workers.projection_plan import Item


def templates(ctx: WorkerContext) -> Templates:
    s = ctx.settings
    body = Path(s.event_body_template).read_text() if s.event_body_template else Templates.body
    return Templates(subject=s.event_subject_template or Templates.subject, body=body)


def window_start(ctx: WorkerContext) -> datetime:
    """The oldest appointment start the sync still shows (EXSYNC_SYNC_PAST_DAYS back)."""
    return datetime.now(UTC) - timedelta(days=ctx.options.sync_past_days)


def items_of(ctx: WorkerContext, staff: Staff) -> list[Item]:
    """The staff member's upcoming appointments and Coconut absences, as Coconut has them now,
    each with the event their mailbox should show (None: none)."""
    url, shown = ctx.settings.coconut_app_url, templates(ctx)
    found = [
        Item("appointment", str(a.id),
             appointment_event(a, url, shown) if is_live(a) and staff.id in a.staff_ids else None)
        for a in ctx.coconut.appointments(user=staff.id, start_after=window_start(ctx))
    ]  # fmt: skip
    found += [
        Item("absence", str(b.id), absence_event(b) if b.user_id == staff.id else None)
        for b in ctx.coconut.absences(user=staff.id, source="coconut")
    ]
    return found
