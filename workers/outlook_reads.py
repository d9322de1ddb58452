"""What a mailbox round reads from Graph: one delta round (or, when delta misbehaves, the whole
window by calendarView) as plain instances (workers.block_plan.Instance), and the single reads
the busy-block planner asks for.

A delta round is read to its end (every `nextLink`) before anything is applied, so a round that
fails part-way applies nothing and keeps the old delta link. Graph's delta is defensive work:
a 410 or a SyncState error says the cursor is stale (start over), and the rest is a DeltaFault.
Graph pages delta badly on mailboxes heavy with recurring meetings (research/graph-reality.md
item 1): pages larger than asked, nextLinks that repeat, nextLinks that change on every page and
never reach a deltaLink, empty pages that still link on, 503/504. So a round is bounded and can
never loop: EXSYNC_DELTA_PAGE_LIMIT pages, EXSYNC_DELTA_ITEM_LIMIT items, EXSYNC_DELTA_ROUND_SECONDS
(retries included), and EXSYNC_DELTA_STALL_PAGES pages in a row that bring no item id it had not
listed yet; a repeated `nextLink`, a page with neither link, or a 503/504 still answered after
the gate's retries is a fault too. The job then reads the mailbox by `read_window` instead: a
plain calendarView of the same window, paged, with the fields an Instance carries and delta's
Prefer headers (workers.mailbox_sync).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from kiota_abstractions.base_request_configuration import RequestConfiguration
from msgraph.generated.models.event import Event
from msgraph.generated.models.event_collection_response import EventCollectionResponse
from msgraph.generated.models.o_data_errors.o_data_error import ODataError
from msgraph.generated.users.item.calendar_view.calendar_view_request_builder import (
    CalendarViewRequestBuilder,
)
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
# What `instance` reads of an event: a window read asks for no more (delta has no $select).
WINDOW_FIELDS = [
    "id", "type", "seriesMasterId", "changeKey", "transactionId", "start", "end", *MASTER_FIELDS,
]  # fmt: skip
UNAVAILABLE = {503, 504}  # what Graph answers delta on mailboxes heavy with recurring series


class DeltaFault(Exception):
    """The delta chain misbehaved (a bound passed, a repeated nextLink, 503/504): this round
    reads the window instead. `kind` names it for the metric."""

    def __init__(self, reason: str, kind: str) -> None:
        super().__init__(reason)
        self.kind = kind


class Stale(Exception):
    """Graph no longer knows the delta token (410): a fresh round is needed."""


def round_seconds(ctx: WorkerContext) -> float:
    """A delta round's time: EXSYNC_DELTA_ROUND_SECONDS, and at most a third of the job's, so
    the window read that replaces a round cut short still fits in the job."""
    return min(ctx.settings.delta_round_seconds, ctx.settings.job_timeout / 3)


def read_round(
    ctx: WorkerContext, user_id: str, delta_link: str | None, start: datetime, end: datetime
) -> tuple[list[Instance], str]:
    """Every instance of one delta round and the link for the next one; DeltaFault when the
    round passes a bound (pages, items, time, pages without a new item) or misbehaves."""
    settings = ctx.settings
    budget = round_seconds(ctx)
    deadline = time.monotonic() + budget
    link = delta_link
    seen: set[str] = set()
    listed: set[str] = set()
    items: list[Instance] = []
    idle = 0  # pages in a row that listed no item id new to the round
    for _ in range(settings.delta_page_limit):
        request = _page_request(ctx, user_id, link, start, end)
        page = _bounded(ctx, user_id, request, deadline, budget)
        if page is None:
            raise DeltaFault("a delta page came back empty-handed", "no_link")
        found = [instance(event) for event in page.value or []]
        items.extend(found)
        if len(items) > settings.delta_item_limit:
            raise DeltaFault(f"a delta round passed {settings.delta_item_limit} items", "items")
        if page.odata_delta_link:
            return items, page.odata_delta_link
        link = page.odata_next_link
        if not link:
            raise DeltaFault("a delta page had neither nextLink nor deltaLink", "no_link")
        if link in seen:
            raise DeltaFault("the same nextLink came back twice", "repeated_link")
        seen.add(link)
        new = {i.event_id for i in found} - listed
        listed |= new
        idle = 0 if new else idle + 1
        if idle >= settings.delta_stall_pages:
            raise DeltaFault(
                f"{idle} delta pages in a row brought no new item, their nextLinks changing",
                "no_progress",
            )  # fmt: skip
    raise DeltaFault(f"a delta round passed {settings.delta_page_limit} pages", "pages")


def _bounded(
    ctx: WorkerContext, user_id: str, request: Callable[[], Awaitable[DeltaGetResponse | None]],
    deadline: float, budget: float,
) -> DeltaGetResponse | None:  # fmt: skip
    """One delta page through the gate (its retries included) within the round's time."""
    late = DeltaFault(f"a delta round took longer than {budget:.0f} s", "time")
    left = deadline - time.monotonic()
    if left <= 0:
        raise late
    try:
        return ctx.run(asyncio.wait_for(ctx.gate.call(user_id, request), left))
    except TimeoutError:
        raise late from None
    except ODataError as exc:
        status = exc.response_status_code
        if status == 410 or _code(exc).startswith("SyncState"):
            raise Stale() from None
        if status in UNAVAILABLE:
            raise DeltaFault(
                f"Graph answered delta {status} again and again", "unavailable"
            ) from None
        raise


def read_window(ctx: WorkerContext, user_id: str, start: datetime, end: datetime) -> list[Instance]:
    """Every instance in the window by a plain calendarView read, paged: what a delta round
    would list from scratch, without delta's paging. Its paging is checked as delta's is
    (a repeated nextLink, EXSYNC_DELTA_PAGE_LIMIT pages); a failure fails the job."""
    view = ctx.graph.users.by_user_id(user_id).calendar_view
    query = CalendarViewRequestBuilder.CalendarViewRequestBuilderGetQueryParameters(
        start_date_time=_instant(start), end_date_time=_instant(end), select=WINDOW_FIELDS,
        top=PAGE_SIZE,
    )  # fmt: skip
    first = _prefer(RequestConfiguration(query_parameters=query))
    more = _prefer(RequestConfiguration())
    items: list[Instance] = []
    seen: set[str] = set()
    link: str | None = None
    for _ in range(ctx.settings.delta_page_limit):
        builder = view if link is None else view.with_url(link)
        config = first if link is None else more
        page: EventCollectionResponse | None = ctx.run(
            ctx.gate.call(user_id, lambda b=builder, c=config: b.get(request_configuration=c))
        )
        items.extend(instance(event) for event in (page.value if page else None) or [])
        link = page.odata_next_link if page else None
        if not link:
            return items
        if link in seen:
            raise RuntimeError(f"calendarView of {user_id} repeated a nextLink")
        seen.add(link)
    raise RuntimeError(f"calendarView of {user_id} passed {ctx.settings.delta_page_limit} pages")


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
            start_date_time=_instant(start), end_date_time=_instant(end)
        )
    config = _prefer(RequestConfiguration(query_parameters=params))
    builder = delta if link is None else delta.with_url(link)
    return lambda: builder.get(request_configuration=config)


def _prefer(config: RequestConfiguration[Any]) -> RequestConfiguration[Any]:
    """The Prefer headers of every calendar read: UTC times, pages of PAGE_SIZE."""
    config.headers.add("Prefer", 'outlook.timezone="UTC"')
    config.headers.add("Prefer", f"odata.maxpagesize={PAGE_SIZE}")
    return config


def _instant(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _code(exc: ODataError) -> str:
    return exc.error.code if exc.error and exc.error.code else ""


def _utc(value: str) -> datetime:
    """Graph's UTC wall time (7-digit fraction, no offset), as asked with Prefer."""
    return datetime.fromisoformat(value[:19]).replace(tzinfo=UTC)


def _enum(value: Any) -> str | None:
    return None if value is None else str(getattr(value, "value", value))
