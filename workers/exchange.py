"""Writing our projection events into one mailbox through msgraph-sdk, within Exchange's limits.

Every call goes through the mailbox gate (core.throttle): shared `Retry-After` waits and at
most four requests in flight per mailbox across all workers. Events are created in the primary
calendar with our mark and a deterministic `transactionId`, so a retried create returns the
first event instead of a second one.
"""

from __future__ import annotations

from dataclasses import dataclass

from kiota_abstractions.base_request_configuration import RequestConfiguration
from msgraph.generated.models.body_type import BodyType
from msgraph.generated.models.date_time_time_zone import DateTimeTimeZone
from msgraph.generated.models.event import Event
from msgraph.generated.models.free_busy_status import FreeBusyStatus
from msgraph.generated.models.item_body import ItemBody
from msgraph.generated.models.location import Location
from msgraph.generated.models.o_data_errors.o_data_error import ODataError
from msgraph.generated.models.sensitivity import Sensitivity
from msgraph.generated.models.single_value_legacy_extended_property import (
    SingleValueLegacyExtendedProperty,
)
from msgraph.generated.users.item.events.events_request_builder import EventsRequestBuilder
from msgraph.generated.users.item.events.item.event_item_request_builder import (
    EventItemRequestBuilder,
)

from core.marks import MARK_PROPERTY_ID
from workers.context import WorkerContext
from workers.projection import EventDraft


@dataclass(frozen=True)
class Written:
    event_id: str
    change_key: str


class MailboxRefused(Exception):
    """Graph answered 403: the app (or the service account) may not write this mailbox."""


def create(ctx: WorkerContext, mailbox: str, draft: EventDraft, mark: str, tx: str) -> Written:
    event = _event(draft)
    event.transaction_id = tx
    event.single_value_extended_properties = [
        SingleValueLegacyExtendedProperty(id=MARK_PROPERTY_ID, value=mark)
    ]
    events = ctx.graph.users.by_user_id(mailbox).events
    return _written(ctx.run(_call(ctx, mailbox, lambda: events.post(event))))


def update(ctx: WorkerContext, mailbox: str, event_id: str, draft: EventDraft) -> Written | None:
    """The event after the update, or None when it is gone (deleted in Outlook)."""
    item = ctx.graph.users.by_user_id(mailbox).events.by_event_id(event_id)
    try:
        return _written(ctx.run(_call(ctx, mailbox, lambda: item.patch(_event(draft)))))
    except ODataError as exc:
        if exc.response_status_code == 404:
            return None
        raise


def change_key(ctx: WorkerContext, mailbox: str, event_id: str) -> str | None:
    """The event's current changeKey, or None when it is gone: a cheap read to spot an edit."""
    item = ctx.graph.users.by_user_id(mailbox).events.by_event_id(event_id)
    query = EventItemRequestBuilder.EventItemRequestBuilderGetQueryParameters(select=["changeKey"])
    config = RequestConfiguration(query_parameters=query)
    try:
        event = ctx.run(_call(ctx, mailbox, lambda: item.get(request_configuration=config)))
    except ODataError as exc:
        if exc.response_status_code == 404:
            return None
        raise
    return (event.change_key or "") if event else None


def delete(ctx: WorkerContext, mailbox: str, event_id: str) -> None:
    """Idempotent: an event already gone is what we wanted."""
    item = ctx.graph.users.by_user_id(mailbox).events.by_event_id(event_id)
    try:
        ctx.run(_call(ctx, mailbox, lambda: item.delete()))
    except ODataError as exc:
        if exc.response_status_code != 404:
            raise


def find_marked(ctx: WorkerContext, mailbox: str, mark: str) -> list[Written]:
    """Events in the mailbox carrying exactly this mark: how a lost mapping is rebuilt."""
    flt = (
        f"singleValueExtendedProperties/Any(ep: ep/id eq '{MARK_PROPERTY_ID}' "
        f"and ep/value eq '{mark}')"
    )
    query = EventsRequestBuilder.EventsRequestBuilderGetQueryParameters(
        filter=flt, select=["id", "changeKey"], top=10
    )
    config = RequestConfiguration(query_parameters=query)
    events = ctx.graph.users.by_user_id(mailbox).events
    page = ctx.run(_call(ctx, mailbox, lambda: events.get(request_configuration=config)))
    return [_written(event) for event in (page.value if page and page.value else [])]


async def _call(ctx: WorkerContext, mailbox: str, request):  # type: ignore[no-untyped-def]
    try:
        return await ctx.gate.call(mailbox, request)
    except ODataError as exc:
        if exc.response_status_code == 403:
            raise MailboxRefused(refusal(exc, delegated=not ctx.impersonation)) from None
        raise


def refusal(exc: ODataError, *, delegated: bool) -> str:
    """A 403 in plain words with Graph's code and the fix, for the User Accounts row."""
    code = exc.error.code if exc.error and exc.error.code else "ErrorAccessDenied"
    fix = (
        "the service account lacks Author permission on this calendar: ask the staff member "
        "(or an Exchange admin) to share it with the service account as Author"
        if delegated
        else "the app may not open this mailbox: add it to the RBAC for Applications scope "
        "of the app's Application Calendars.ReadWrite role (see the README)"
    )
    return f"Exchange refused access to this mailbox (403 {code}): {fix}"


def _event(draft: EventDraft) -> Event:
    return Event(
        subject=draft.subject,
        body=ItemBody(content_type=BodyType.Html, content=draft.body_html),
        location=Location(display_name=draft.location),
        start=DateTimeTimeZone(date_time=draft.start, time_zone=draft.time_zone),
        end=DateTimeTimeZone(date_time=draft.end, time_zone=draft.time_zone),
        is_all_day=draft.is_all_day,
        show_as=FreeBusyStatus(draft.show_as),
        sensitivity=Sensitivity.Normal,
        is_reminder_on=True,
        reminder_minutes_before_start=15,
    )


def _written(event: Event | None) -> Written:
    if event is None or not event.id:
        raise RuntimeError("Graph answered without the event")
    return Written(event.id, event.change_key or "")
