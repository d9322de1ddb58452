"""Job `sync_mailbox(user_id)`: a staff member's Outlook events become busy time in Coconut.

One round reads a calendarView delta over the sync window to its end (every `nextLink`), then
applies what changed, so a round that fails part-way applies nothing and keeps the old delta
link. For each instance:

- our own projection (the index knows its id) is skipped when its changeKey is the one we
  wrote; a staff member's edit or deletion is recorded as a warning and, unless the admin chose
  to keep such edits, its Coconut item is queued to be put back;
- an event carrying our mark that the index lost is never turned into busy time;
- anything else becomes one external absence on the staff member's Coconut calendar, updated
  and removed with it (workers.busy_time decides what blocks and what it says).

Deletion needs proof: a block goes only on `@removed`, a 404 when the event is read, or the
event itself saying it no longer blocks. A round that would remove more than a set share of the
mailbox's blocks holds those removals until an admin releases them (workers.holds).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime, timedelta
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

from core import audit, jobs, store
from core.coconut import AbsenceWrite, Conflict, Staff
from core.connection import EditPolicy
from core.marks import MARK_PROPERTY_ID, Projection, ProjectionIndex, parse_mark
from workers import busy_time, directory, holds
from workers.appointments import SYNC_ABSENCE, SYNC_APPOINTMENT
from workers.context import WorkerContext, context

log = logging.getLogger(__name__)

PAGE_SIZE = 100


class DeltaFault(Exception):
    """The delta chain misbehaved (a repeated nextLink, too many pages): start over later."""


@dataclass(frozen=True)
class Block:
    """What we wrote to Coconut for one Exchange instance."""

    absence_id: int  # 0 while its create is pending
    series: str  # the series master's id for an occurrence or exception, else ""
    digest: str  # of the AbsenceWrite we last sent
    version: str = ""  # the instance's changeKey it was made from (core.echoes)

    @property
    def pending(self) -> bool:
        return not self.absence_id


def block_key(user_id: str) -> str:
    return store.block_key(user_id)


def sync_mailbox(user_id: str) -> int:
    ctx = context()
    return jobs.run_coalesced(
        ctx.redis, "mailbox", user_id, lambda _: _round(ctx, user_id),
        settle=ctx.settings.coalesce_settle_seconds,
    )  # fmt: skip


# ---------------------------------------------------------------- one round


def _round(ctx: WorkerContext, user_id: str) -> None:
    if not ctx.syncing:
        return  # the initial sync after the next Authorize brings everything back in line
    staff = _staff(ctx, user_id)
    if staff is None:
        return
    options = ctx.options
    start, end = _window(options.sync_past_days, options.sync_future_days)
    state = _state(ctx, user_id)
    fresh = state.get("window_start") != start.isoformat() or not state.get("delta_link")
    try:
        items, delta_link = _read_round(ctx, user_id, None if fresh else state["delta_link"],
                                        start, end)  # fmt: skip
    except _Stale:
        log.info("mailbox.delta_stale", extra={"mailbox": user_id})
        fresh = True
        items, delta_link = _read_round(ctx, user_id, None, start, end)
    except DeltaFault as exc:
        ctx.redis.hset(store.mailbox_key(user_id), "fault", str(exc))
        ctx.redis.hdel(store.mailbox_key(user_id), "delta_link")
        log.warning("mailbox.delta_fault", extra={"mailbox": user_id, "reason": str(exc)})
        raise
    _apply(ctx, user_id, staff, items, fresh, options.show_event_titles, options.edit_policy)
    ctx.redis.hset(
        store.mailbox_key(user_id),
        mapping={"delta_link": delta_link, "window_start": start.isoformat(),
                 "last_sync_at": int(time.time()), "fault": ""},
    )  # fmt: skip


def _staff(ctx: WorkerContext, user_id: str) -> Staff | None:
    staff_id = directory.staff_for(ctx, user_id)
    staff = ctx.staff(int(staff_id)) if staff_id else None
    if staff is None or not (staff.takes_appointments and staff.active):
        log.info("mailbox.not_covered", extra={"mailbox": user_id})
        return None
    return staff


def _window(past_days: int, future_days: int) -> tuple[datetime, datetime]:
    """Whole UTC days, so the window (and with it the delta chain) moves forward once a day."""
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return today - timedelta(days=past_days), today + timedelta(days=future_days)


def _state(ctx: WorkerContext, user_id: str) -> dict[str, str]:
    raw = ctx.redis.hgetall(store.mailbox_key(user_id))
    return {k.decode(): v.decode() for k, v in raw.items()}


class _Stale(Exception):
    """Graph no longer knows the delta token (410): a fresh round is needed."""


def _read_round(
    ctx: WorkerContext, user_id: str, delta_link: str | None, start: datetime, end: datetime
) -> tuple[list[Event], str]:
    """Every instance of one delta round and the link for the next one."""
    link = delta_link
    seen: set[str] = set()
    items: list[Event] = []
    for _ in range(ctx.settings.delta_page_limit):
        try:
            page = ctx.run(ctx.gate.call(user_id, _page_request(ctx, user_id, link, start, end)))
        except ODataError as exc:
            if exc.response_status_code == 410 or _code(exc).startswith("SyncState"):
                raise _Stale() from None
            raise
        if page is None:
            raise DeltaFault("a delta page came back empty-handed")
        items.extend(page.value or [])
        if page.odata_delta_link:
            return items, page.odata_delta_link
        link = page.odata_next_link
        if not link:
            raise DeltaFault("a delta page had neither nextLink nor deltaLink")
        if link in seen:
            raise DeltaFault("the same nextLink came back twice")
        seen.add(link)
    raise DeltaFault(f"a delta round passed {ctx.settings.delta_page_limit} pages")


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


# ---------------------------------------------------------------- applying a round


def _apply(
    ctx: WorkerContext, user_id: str, staff: Staff, items: list[Event], fresh: bool,
    show_titles: bool, policy: EditPolicy,
) -> None:  # fmt: skip
    index = ProjectionIndex(ctx.redis)
    known = _blocks(ctx, user_id)
    masters: dict[str, busy_time.Judged | None] = {}
    seen: set[str] = set()
    wanted: dict[str, tuple[AbsenceWrite, str]] = {}
    removals: set[str] = set()
    series_listed: set[str] = set()

    for item in items:
        event_id = item.id or ""
        seen.add(event_id)
        ours = index.by_event(user_id, event_id)
        if _removed(item):
            if ours is not None:
                _own_edited(ctx, user_id, ours, policy, deleted=True)
            removals |= {event_id} & known.keys()
            removals |= {e for e, b in known.items() if b.series == event_id}
            continue
        if ours is not None:
            if item.change_key is not None and item.change_key != ours.change_key:
                _own_edited(ctx, user_id, ours, policy, deleted=False)
            continue
        kind = _type(item)
        if kind == "seriesMaster":
            continue  # a calendar view lists instances, not masters
        series = item.series_master_id or "" if kind in ("occurrence", "exception") else ""
        if series:
            series_listed.add(series)
        judged = _judge(ctx, user_id, item, series, masters, show_titles)
        if judged is None:  # its master is gone: the occurrence goes with it
            removals |= {event_id} & known.keys()
            continue
        occurrence = _occurrence(item)
        if occurrence is None:
            continue
        desired = busy_time.block_for(occurrence, judged, staff.id, _zone(staff))
        if desired is None:
            removals |= {event_id} & known.keys()
        elif event_id not in known and _carries_our_mark(ctx, user_id, item):
            continue
        else:
            wanted[event_id] = (desired, series)

    # Occurrences deleted from a live series get no @removed: read each one that was not listed
    # with its series, and a 404 is the proof. So for a pending block: the round that began it
    # never stored its delta link, so this one lists its event unless the event is gone.
    unlisted = [
        e for e, b in known.items()
        if e not in seen and (fresh or b.pending or (b.series and b.series in series_listed))
    ]  # fmt: skip
    removals |= {e for e in unlisted if _gone(ctx, user_id, e)}

    for event_id, (desired, series) in wanted.items():
        _upsert(ctx, user_id, event_id, desired, series, known.get(event_id))
    removals -= wanted.keys()
    if holds.should_hold(len(removals), len(known), ctx.settings):
        holds.hold(ctx.redis, user_id, sorted(removals), total=len(known))
        log.warning("mailbox.removals_held", extra={"mailbox": user_id, "count": len(removals)})
        return
    for event_id in removals:
        remove_block(ctx, user_id, event_id)


def _removed(item: Event) -> bool:
    return bool(item.additional_data and "@removed" in item.additional_data)


def _type(item: Event) -> str:
    value = item.type
    return str(getattr(value, "value", value) or "singleInstance")


def _judge(
    ctx: WorkerContext, user_id: str, item: Event, series: str,
    masters: dict[str, busy_time.Judged | None], show_titles: bool,
) -> busy_time.Judged | None:  # fmt: skip
    """An exception carries its own fields; a plain occurrence is judged by its master."""
    if _type(item) != "occurrence":
        return _judged(item, show_titles)
    if series not in masters:
        masters[series] = _read_master(ctx, user_id, series, show_titles)
    return masters[series]


def _judged(event: Event, show_titles: bool) -> busy_time.Judged:
    return busy_time.judge(
        event.subject,
        _enum(event.sensitivity),
        _enum(event.show_as),
        is_cancelled=bool(event.is_cancelled),
        is_all_day=bool(event.is_all_day),
        show_titles=show_titles,
    )


def _read_master(
    ctx: WorkerContext, user_id: str, master_id: str, show_titles: bool
) -> busy_time.Judged | None:
    item = ctx.graph.users.by_user_id(user_id).events.by_event_id(master_id)
    query = EventItemRequestBuilder.EventItemRequestBuilderGetQueryParameters(
        select=["subject", "sensitivity", "showAs", "isCancelled", "isAllDay"]
    )
    config = RequestConfiguration(query_parameters=query)
    try:
        master = ctx.run(ctx.gate.call(user_id, lambda: item.get(request_configuration=config)))
    except ODataError as exc:
        if exc.response_status_code == 404:
            return None
        raise
    return _judged(master, show_titles) if master is not None else None


def _occurrence(item: Event) -> busy_time.Occurrence | None:
    if item.start is None or item.end is None or not item.id:
        return None
    version = item.change_key or str((item.additional_data or {}).get("@odata.etag", ""))
    return busy_time.Occurrence(
        event_id=item.id,
        version=version,
        start=_utc(item.start.date_time or ""),
        end=_utc(item.end.date_time or ""),
    )


def _utc(value: str) -> datetime:
    """Graph's UTC wall time (7-digit fraction, no offset), as asked with Prefer."""
    return datetime.fromisoformat(value[:19]).replace(tzinfo=UTC)


def _enum(value: Any) -> str | None:
    return None if value is None else str(getattr(value, "value", value))


def _zone(staff: Staff) -> str:
    return busy_time.iana_zone(staff.timezone)


def _carries_our_mark(ctx: WorkerContext, user_id: str, item: Event) -> bool:
    """A new event with a transactionId may be one of ours whose mapping Redis lost: read its
    mark once before making it busy time (our events always carry both)."""
    if not item.transaction_id:
        return False
    request = ctx.graph.users.by_user_id(user_id).events.by_event_id(item.id or "")
    query = EventItemRequestBuilder.EventItemRequestBuilderGetQueryParameters(
        select=["id"],
        expand=[f"singleValueExtendedProperties($filter=id eq '{MARK_PROPERTY_ID}')"],
    )
    config = RequestConfiguration(query_parameters=query)
    try:
        event = ctx.run(ctx.gate.call(user_id, lambda: request.get(request_configuration=config)))
    except ODataError as exc:
        if exc.response_status_code == 404:
            return True  # gone already: nothing to make busy
        raise
    for prop in (event.single_value_extended_properties or []) if event else []:
        mark = parse_mark(prop.value or "")
        if mark is not None:
            if mark[0] == ctx.settings.deployment_id:
                func = SYNC_APPOINTMENT if mark[1] == "appointment" else SYNC_ABSENCE
                jobs.ensure_queued(ctx.queue, func, mark[1], mark[2])  # rebuilds the mapping
            return True  # ours, or another deployment's projection: never busy time here
    return False


def _gone(ctx: WorkerContext, user_id: str, event_id: str) -> bool:
    request = ctx.graph.users.by_user_id(user_id).events.by_event_id(event_id)
    query = EventItemRequestBuilder.EventItemRequestBuilderGetQueryParameters(select=["id"])
    config = RequestConfiguration(query_parameters=query)
    try:
        ctx.run(ctx.gate.call(user_id, lambda: request.get(request_configuration=config)))
    except ODataError as exc:
        if exc.response_status_code == 404:
            return True
        raise
    return False


def _own_edited(
    ctx: WorkerContext, user_id: str, ours: Projection, policy: EditPolicy, *, deleted: bool
) -> None:
    what = "deleted" if deleted else "edited"
    restore = policy == EditPolicy.RESTORE
    warning = f"a Coconut {ours.kind} was {what} in Outlook; " + (
        "it was put back as Coconut has it" if restore else "the edit is kept for now"
    )
    ctx.redis.hset(store.mailbox_key(user_id), "warning", warning)
    log.info("projection.edited_in_outlook", extra={"mailbox": user_id, "kind": ours.kind})
    if restore:
        func = SYNC_APPOINTMENT if ours.kind == "appointment" else SYNC_ABSENCE
        jobs.ensure_queued(ctx.queue, func, ours.kind, ours.item_id)


# ---------------------------------------------------------------- Coconut writes


def _blocks(ctx: WorkerContext, user_id: str) -> dict[str, Block]:
    raw = ctx.redis.hgetall(block_key(user_id))
    return {k.decode(): Block(**json.loads(v)) for k, v in raw.items()}


def _upsert(
    ctx: WorkerContext, user_id: str, event_id: str, desired: AbsenceWrite, series: str,
    known: Block | None,
) -> None:  # fmt: skip
    digest = _digest(desired)
    version = desired.external_version or ""
    if known is not None and known.digest == digest:
        if known.version != version:  # nothing for Coconut, but the next echo is known
            ctx.redis.hset(
                block_key(user_id), event_id, json.dumps(asdict(replace(known, version=version)))
            )
        return
    if known is not None and not known.pending:
        absence = ctx.coconut.update_absence(known.absence_id, desired)
    else:
        # Pending first: should this worker die before Coconut's answer is recorded, the next
        # round still knows a block may exist for this event, and removes it if it must go.
        pending = Block(0, series, "")
        ctx.redis.hset(block_key(user_id), event_id, json.dumps(asdict(pending)))
        try:
            absence = ctx.coconut.create_absence(desired)
        except Conflict as exc:
            # Created by an earlier round whose mapping was lost (a crash, a stale delta).
            if exc.existing_id is None:
                raise
            absence = ctx.coconut.update_absence(exc.existing_id, desired)
    block = Block(absence.id, series, digest, version)
    ctx.redis.hset(block_key(user_id), event_id, json.dumps(asdict(block)))
    audit.emit(
        "busy_time.updated" if known is not None and not known.pending else "busy_time.created",
        mailbox=user_id, event_id=event_id, absence_id=str(absence.id),
        staff_id=str(desired.user_id),
    )  # fmt: skip


def forget_mailbox(user_id: str) -> int:
    """A mailbox no longer matched to anyone: its busy blocks and subscription go."""
    from subscriptions import manager

    ctx = context()
    ctx.redis.delete(store.dirty_key("forget", user_id))
    with jobs.item_lock(ctx.redis, "mailbox", user_id):
        if ctx.redis.hexists(store.mailbox_key(user_id), "staff_id"):
            return 0  # matched again meanwhile
        removed = 0
        for event_id in ctx.redis.hkeys(block_key(user_id)):
            remove_block(ctx, user_id, event_id.decode())
            removed += 1
        record = manager.for_mailbox(ctx, user_id)
        if record is not None:
            manager.delete(ctx, record.subscription_id)
        ctx.redis.hdel(store.mailbox_key(user_id), "delta_link", "window_start")
    log.info("mailbox.forgotten", extra={"mailbox": user_id, "blocks": removed})
    return removed


def remove_block(ctx: WorkerContext, user_id: str, event_id: str) -> None:
    raw = ctx.redis.hget(block_key(user_id), event_id)
    if raw is None:
        return
    block = Block(**json.loads(raw))
    removed = [block.absence_id]
    if block.pending:  # the create may have happened: Coconut knows it by the event's id
        removed = [a.id for a in ctx.coconut.absences(source="external", external_id=event_id)]
    for absence_id in removed:
        ctx.coconut.delete_absence(absence_id)
    ctx.redis.hdel(block_key(user_id), event_id)
    for absence_id in removed:
        audit.emit(
            "busy_time.removed", mailbox=user_id, event_id=event_id, absence_id=str(absence_id)
        )


def _digest(desired: AbsenceWrite) -> str:
    fields = asdict(desired)
    fields.pop("external_version")  # a new changeKey alone changes nothing in Coconut
    raw = json.dumps(fields, sort_keys=True, default=str).encode()
    return hashlib.sha256(raw).hexdigest()[:32]
