"""Writing our projection events into one mailbox through msgraph-sdk, within Exchange's limits.

Every call goes through the mailbox gate (core.microsoft.throttle): shared `Retry-After` waits
and at most four requests in flight per mailbox across all workers. Events are created in the
primary calendar with our mark and a deterministic `transactionId`, so a retried create never
makes a second event: Graph refuses it (400 ErrorDuplicateTransactionId, `DuplicateTransaction`
or `Answer.duplicate_transaction`) and workers.projection_writes adopts the first by our mark.

Many writes to one mailbox go in `$batch` calls of up to 20 (`send_batch`), built with the
SDK's BatchRequestContent. Three traps of msgraph-core are worked around here (research/graph.md
§7, §9): its BatchResponseItem drops every JSON body (kiota reads an object as bytes and gets
None), so the raw answer is parsed; it writes `depends_on` where Graph reads `dependsOn`, so
the body is corrected; and nothing retries an inner 429, so `send_batch` does, waiting as the
inner `Retry-After` asks through the shared gate. A batch takes as many gate slots as Outlook
runs its requests in parallel (four), so it never raises the mailbox's concurrency.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kiota_abstractions.base_request_configuration import RequestConfiguration
from kiota_abstractions.request_information import RequestInformation
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
from msgraph_core.requests.batch_request_content import BatchRequestContent
from msgraph_core.requests.batch_request_item import BatchRequestItem

from core.microsoft.throttle import TRANSIENT_STATUSES, RetryPolicy, retry_after_header
from workers.context import WorkerContext
from workers.marks import MARK_PROPERTY_ID, parse_mark
from workers.projection import EventDraft

log = logging.getLogger(__name__)

# Graph's code for a create whose transactionId was used already (reported by integrators;
# Microsoft documents what transactionId is for, not this answer).
DUPLICATE_TRANSACTION = "ErrorDuplicateTransactionId"
BATCH_LIMIT = 20  # requests per $batch (Graph's limit)
BATCH_PARALLEL = 4  # inner requests Outlook runs at once
LIST_PAGE = 500


@dataclass(frozen=True)
class Written:
    event_id: str
    change_key: str


@dataclass(frozen=True)
class Marked:
    """One of our events as a mailbox listing shows it: enough to adopt it or leave it be."""

    event_id: str
    change_key: str
    mark: str
    start: datetime | None  # UTC


@dataclass(frozen=True)
class Answer:
    """One inner answer of a `$batch`."""

    status: int
    body: dict[str, Any]

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def written(self) -> Written:
        if not self.body.get("id"):
            raise RuntimeError("Graph answered without the event")
        return Written(self.body["id"], self.body.get("changeKey") or "")

    @property
    def error_code(self) -> str:
        """Graph's error code, "" for none."""
        return _error_code(self)

    @property
    def duplicate_transaction(self) -> bool:
        """A create refused because its transactionId made an event already."""
        return self.status == 400 and self.error_code == DUPLICATE_TRANSACTION

    @classmethod
    def duplicate(cls) -> Answer:
        """The answer `duplicate_transaction` recognizes, for a create sent on its own."""
        return cls(400, {"error": {"code": DUPLICATE_TRANSACTION}})


class DuplicateTransaction(Exception):
    """Graph refused a create: 400 ErrorDuplicateTransactionId, its transactionId made an event
    already. A create sent again after Graph carried it out (its answer lost to a 5xx or a
    timeout, then retried) gets this answer instead of the first event."""


class MailboxRefused(Exception):
    """Graph answered 403: the app (or the service account) may not write this mailbox."""


class BatchIncomplete(Exception):
    """Inner requests kept failing transiently after every retry; the job is retried later."""


def create(ctx: WorkerContext, mailbox: str, draft: EventDraft, mark: str, tx: str) -> Written:
    """The new event; DuplicateTransaction when `tx` made one already (find it by `mark`)."""
    event = _event(draft)
    event.transaction_id = tx
    event.single_value_extended_properties = [
        SingleValueLegacyExtendedProperty(id=MARK_PROPERTY_ID, value=mark)
    ]
    events = ctx.graph.users.by_user_id(mailbox).events
    try:
        return _written(ctx.run(_call(ctx, mailbox, lambda: events.post(event))))
    except ODataError as exc:
        code = exc.error.code if exc.error else None
        if exc.response_status_code == 400 and code == DUPLICATE_TRANSACTION:
            raise DuplicateTransaction(tx) from None
        raise


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


def list_ours(ctx: WorkerContext, mailbox: str) -> list[Marked]:
    """Every event in the mailbox carrying this deployment's mark: one paged read instead of a
    look-up per item. Graph compares the value case-insensitively, so the deployment id is
    checked exactly here (another deployment's events are never ours)."""
    deployment = ctx.settings.deployment_id
    prefix = f"{deployment}:"
    flt = (
        f"singleValueExtendedProperties/Any(ep: ep/id eq '{MARK_PROPERTY_ID}' "
        f"and startswith(ep/value, '{prefix}'))"
    )
    query = EventsRequestBuilder.EventsRequestBuilderGetQueryParameters(
        filter=flt, select=["id", "changeKey", "start"], top=LIST_PAGE,
        expand=[f"singleValueExtendedProperties($filter=id eq '{MARK_PROPERTY_ID}')"],
    )  # fmt: skip
    config = RequestConfiguration(query_parameters=query)
    config.headers.add("Prefer", 'outlook.timezone="UTC"')
    events = ctx.graph.users.by_user_id(mailbox).events
    found: list[Marked] = []
    page = ctx.run(_call(ctx, mailbox, lambda: events.get(request_configuration=config)))
    while page is not None:
        found += [
            m for m in map(_marked, page.value or [])
            if m is not None and (parse_mark(m.mark) or ("",))[0] == deployment
        ]  # fmt: skip
        if not page.odata_next_link:
            break
        more = events.with_url(page.odata_next_link)
        page = ctx.run(_call(ctx, mailbox, lambda b=more: b.get(request_configuration=config)))
    return found


def create_request(
    ctx: WorkerContext, mailbox: str, draft: EventDraft, mark: str, tx: str
) -> RequestInformation:
    event = _event(draft)
    event.transaction_id = tx
    event.single_value_extended_properties = [
        SingleValueLegacyExtendedProperty(id=MARK_PROPERTY_ID, value=mark)
    ]
    return ctx.graph.users.by_user_id(mailbox).events.to_post_request_information(event)


def update_request(
    ctx: WorkerContext, mailbox: str, event_id: str, draft: EventDraft
) -> RequestInformation:
    item = ctx.graph.users.by_user_id(mailbox).events.by_event_id(event_id)
    return item.to_patch_request_information(_event(draft))


def delete_request(ctx: WorkerContext, mailbox: str, event_id: str) -> RequestInformation:
    return (
        ctx.graph.users.by_user_id(mailbox)
        .events.by_event_id(event_id)
        .to_delete_request_information()
    )


def send_batch(
    ctx: WorkerContext, mailbox: str, requests: dict[str, RequestInformation]
) -> dict[str, Answer]:
    """Up to 20 requests to one mailbox in one `$batch`; every request's final answer by key.

    Inner answers that are transient (429, 503 and other 5xx, 424 for a failed dependency) are
    sent again in a smaller batch after the wait their `Retry-After` asks for, shared with every
    worker through the gate; creates carry their transactionId, so a create that did happen
    before its 503 is not made twice (its answer is then Graph's 400 ErrorDuplicateTransactionId,
    left to the caller). An inner 403 is the mailbox refusing us.
    """
    if len(requests) > BATCH_LIMIT:
        raise ValueError(f"a $batch takes at most {BATCH_LIMIT} requests, got {len(requests)}")
    return ctx.run(_send_batch(ctx, mailbox, requests))


async def _send_batch(
    ctx: WorkerContext, mailbox: str, requests: dict[str, RequestInformation]
) -> dict[str, Answer]:
    answers: dict[str, Answer] = {}
    pending = dict(requests)
    for attempt in range(RetryPolicy.attempts):
        got = await _post_batch(ctx, mailbox, pending)
        retry, asked = {}, []
        for key, request in pending.items():
            answer = got.get(key, Answer(503, {}))  # an answer left out was not carried out
            if answer.status in TRANSIENT_STATUSES or answer.status == 424:
                retry[key] = request
                if answer.status in (429, 503):
                    asked.append(retry_after_header(answer.body.get("_headers", {})))
            elif answer.status == 403:
                raise MailboxRefused(_refusal_text(_error_code(answer), not ctx.impersonation))
            else:
                answers[key] = answer
        if not retry:
            return answers
        pending = retry
        backoff = min(RetryPolicy.max_seconds, RetryPolicy.base_seconds * 2**attempt)
        wait = max((a for a in asked if a is not None), default=backoff)
        log.info("graph.batch_retry", extra={"mailbox": mailbox, "requests": len(retry),
                                             "wait": wait})  # fmt: skip
        if asked:
            ctx.gate.hold(mailbox, wait)  # every worker on the mailbox waits, as for a 429
        else:
            await asyncio.sleep(wait)
    raise BatchIncomplete(f"{len(pending)} request(s) to {mailbox} kept failing")


async def _post_batch(
    ctx: WorkerContext, mailbox: str, requests: dict[str, RequestInformation]
) -> dict[str, Answer]:
    """One `$batch` call: parallel when the mailbox may take four at once, else a chain."""
    parallel = ctx.gate.slots >= BATCH_PARALLEL
    base = ctx.graph.request_adapter.base_url.rstrip("/")
    items: dict[str, BatchRequestItem] = {}
    previous: list[str] = []
    for key, request in requests.items():
        item = BatchRequestItem(request, id=key, depends_on=[] if parallel else previous)
        item.url = item.url.removeprefix(base)  # see _graph_batch_body
        items[key] = item
        previous = [key]
    builder = ctx.graph.batch
    info = await builder.to_post_request_information(BatchRequestContent(items))
    info.content = _graph_batch_body(info.content or b"{}")
    adapter = ctx.graph.request_adapter

    async def post() -> bytes | None:
        return await adapter.send_primitive_async(info, "bytes", {"XXX": ODataError})  # type: ignore[return-value]

    slots = min(len(items), BATCH_PARALLEL) if parallel else 1
    raw = await _call(ctx, mailbox, post, slots=slots)
    return {
        str(r.get("id")): Answer(int(r.get("status", 0)), _body(r))
        for r in json.loads(raw or b"{}").get("responses", [])
    }


def _graph_batch_body(content: bytes) -> bytes:
    """The SDK's batch body as Graph reads it: `dependsOn`, never `depends_on` (which Graph
    ignores, so a chain the SDK meant to be sequential would run in parallel).

    The inner URLs are made relative before this: the SDK writes them absolute once the client
    has sent any request through a builder that shares its path parameters (kiota stores the
    base URL into that shared dict), and its own fix-up (`set_url`) misses `/v1.0`."""
    body = json.loads(content)
    for request in body.get("requests", []):
        depends = request.pop("depends_on", None)
        if depends:
            request["dependsOn"] = depends
    return json.dumps(body).encode()


def _body(response: dict[str, Any]) -> dict[str, Any]:
    """The inner answer's JSON body, with its headers kept beside it for Retry-After."""
    body = response.get("body")
    out = dict(body) if isinstance(body, dict) else {}
    out["_headers"] = response.get("headers") or {}
    return out


def _error_code(answer: Answer) -> str:
    error = answer.body.get("error")
    return str(error.get("code") or "") if isinstance(error, dict) else ""


def _marked(event: Event) -> Marked | None:
    value = next(
        (p.value for p in event.single_value_extended_properties or []
         if (p.id or "").lower() == MARK_PROPERTY_ID.lower() and p.value),
        None,
    )  # fmt: skip
    if value is None or not event.id:
        return None
    start = event.start.date_time if event.start and event.start.date_time else None
    when = datetime.fromisoformat(start[:19]).replace(tzinfo=UTC) if start else None
    return Marked(event.id, event.change_key or "", value, when)


async def _call(ctx: WorkerContext, mailbox: str, request, slots: int = 1):  # type: ignore[no-untyped-def]
    try:
        return await ctx.gate.call(mailbox, request, slots=slots)
    except ODataError as exc:
        if exc.response_status_code == 403:
            raise MailboxRefused(refusal(exc, delegated=not ctx.impersonation)) from None
        raise


def refusal(exc: ODataError, *, delegated: bool) -> str:
    """A 403 in plain words with Graph's code and the fix, for the User Accounts row."""
    return _refusal_text(exc.error.code if exc.error else "", delegated)


def _refusal_text(code: str | None, delegated: bool) -> str:
    code = code or "ErrorAccessDenied"
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
