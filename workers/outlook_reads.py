"""What a mailbox round reads from Graph: one delta round as plain instances
(workers.block_plan.Instance), and the single reads the busy-block planner asks for.

A delta round is read to its end (every `nextLink`) before anything is applied, so a round that
fails part-way applies nothing and keeps the old delta link. Graph's delta is defensive work:
a 410 or a SyncState error says the cursor is stale (start over), and a page with neither link,
a repeated `nextLink` or a round past EXSYNC_DELTA_PAGE_LIMIT pages is a fault.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from kiota_abstractions.base_request_configuration import RequestConfiguration
from msgraph.generated.models.event import Event
from msgraph.generated.models.o_data_errors.o_data_error import ODataError
from msgraph.generated.users.item.calendar_view.delta.delta_get_response import DeltaGetResponse
from msgraph.generated.users.item.calendar_view.delta.delta_request_builder import (
    DeltaRequestBuilder,
)
from msgraph.generated.users.item.events.item.event_item_request_builder import (
    EventItemRequestBuilder,
)

from workers.block_plan import Instance, Reads
from workers.context import WorkerContext
from workers.marks import MARK_PROPERTY_ID

PAGE_SIZE = 100
MASTER_FIELDS = ["subject", "sensitivity", "showAs", "isCancelled", "isAllDay"]


class DeltaFault(Exception):
    """The delta chain misbehaved (a repeated nextLink, too many pages): start over later."""


class Stale(Exception):
    """Graph no longer knows the delta token (410): a fresh round is needed."""


def read_round(
    ctx: WorkerContext, user_id: str, delta_link: str | None, start: datetime, end: datetime
) -> tuple[list[Instance], str]:
    """Every instance of one delta round and the link for the next one."""
    link = delta_link
    seen: set[str] = set()
    items: list[Instance] = []
    for _ in range(ctx.settings.delta_page_limit):
        try:
            page = ctx.run(ctx.gate.call(user_id, _page_request(ctx, user_id, link, start, end)))
        except ODataError as exc:
            if exc.response_status_code == 410 or _code(exc).startswith("SyncState"):
                raise Stale() from None
            raise
        if page is None:
            raise DeltaFault("a delta page came back empty-handed")
        items.extend(instance(event) for event in page.value or [])
        if page.odata_delta_link:
            return items, page.odata_delta_link
        link = page.odata_next_link
        if not link:
            raise DeltaFault("a delta page had neither nextLink nor deltaLink")
        if link in seen:
            raise DeltaFault("the same nextLink came back twice")
        seen.add(link)
    raise DeltaFault(f"a delta round passed {ctx.settings.delta_page_limit} pages")


def answer(ctx: WorkerContext, user_id: str, asked: Reads, answered: Reads) -> None:
    """Make the reads the planner asked for, into `answered`."""
    for series in asked.masters:
        master = _get(ctx, user_id, series, select=MASTER_FIELDS)
        answered.masters[series] = instance(master) if master is not None else None
    for event_id in asked.marks:
        answered.marks[event_id] = _mark(ctx, user_id, event_id)
    for event_id in asked.gone:
        answered.gone[event_id] = _get(ctx, user_id, event_id, select=["id"]) is None


def instance(event: Event) -> Instance:
    data = event.additional_data or {}
    return Instance(
        event_id=event.id or "",
        change_key=event.change_key,
        removed="@removed" in data,
        type=_enum(event.type) or "singleInstance",
        series_master_id=event.series_master_id or "",
        subject=event.subject,
        sensitivity=_enum(event.sensitivity),
        show_as=_enum(event.show_as),
        is_cancelled=bool(event.is_cancelled),
        is_all_day=bool(event.is_all_day),
        start=_utc(event.start.date_time) if event.start and event.start.date_time else None,
        end=_utc(event.end.date_time) if event.end and event.end.date_time else None,
        etag=str(data.get("@odata.etag", "")),
        transaction_id=event.transaction_id,
    )


def _mark(ctx: WorkerContext, user_id: str, event_id: str) -> str | None:
    """The event's mark ("" when it carries none), None when it is gone."""
    ours = f"singleValueExtendedProperties($filter=id eq '{MARK_PROPERTY_ID}')"
    event = _get(ctx, user_id, event_id, select=["id"], expand=[ours])
    if event is None:
        return None
    return next((p.value for p in event.single_value_extended_properties or [] if p.value), "")


def _get(
    ctx: WorkerContext, user_id: str, event_id: str, *, select: list[str],
    expand: list[str] | None = None,
) -> Event | None:  # fmt: skip
    """One event with these fields, None when it is gone (404)."""
    request = ctx.graph.users.by_user_id(user_id).events.by_event_id(event_id)
    query = EventItemRequestBuilder.EventItemRequestBuilderGetQueryParameters(
        select=select, expand=expand
    )
    config = RequestConfiguration(query_parameters=query)
    try:
        return ctx.run(ctx.gate.call(user_id, lambda: request.get(request_configuration=config)))
    except ODataError as exc:
        if exc.response_status_code == 404:
            return None
        raise


def _page_request(
    ctx: WorkerContext, user_id: str, link: str | None, start: datetime, end: datetime
) -> Callable[[], Awaitable[DeltaGetResponse | None]]:
    """The request for one page: the window on the first, then the links verbatim."""
    delta = ctx.graph.users.by_user_id(user_id).calendar_view.delta
    params = None
    if link is None:
        params = DeltaRequestBuilder.DeltaRequestBuilderGetQueryParameters(
            start_date_time=start.strftime("%Y-%m-%dT%H:%M:%SZ"),
            end_date_time=end.strftime("%Y-%m-%dT%H:%M:%SZ"),
        )
    config = RequestConfiguration(query_parameters=params)
    config.headers.add("Prefer", 'outlook.timezone="UTC"')
    config.headers.add("Prefer", f"odata.maxpagesize={PAGE_SIZE}")
    builder = delta if link is None else delta.with_url(link)
    return lambda: builder.get(request_configuration=config)


def _code(exc: ODataError) -> str:
    return exc.error.code if exc.error and exc.error.code else ""


def _utc(value: str) -> datetime:
    """Graph's UTC wall time (7-digit fraction, no offset), as asked with Prefer."""
    return datetime.fromisoformat(value[:19]).replace(tzinfo=UTC)


def _enum(value: Any) -> str | None:
    return None if value is None else str(getattr(value, "value", value))
