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

A round is *full* when it cannot trust its cursor (core.reconcile): asked for (Resync,
Authorize, a re-match, a setting that changes the rules), no cursor, a window that moved, a
cursor older than EXSYNC_CURSOR_MAX_AGE_SECONDS, or a refused item due again. A full round
reads the whole window fresh and compares it with every busy block Coconut holds for the staff
member (workers.held_blocks), not with Redis: missing blocks are made, blocks changed or
deleted in Coconut are put back, and ours with no event behind them go, with the same proofs
and hold. The window moves once a day at the mailbox's own time of day (busy_time.sync_window),
so every mailbox gets a full round daily, spread evenly over the day.

A write Coconut refuses (400, 404, 409, 422) fails that item alone (core.refusals): the rest
of the round applies and its cursor is kept, and the item is tried again by a later full round.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field, replace
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

from core import audit, jobs, refusals, store
from core import reconcile as requests
from core.coconut_models import AbsenceWrite, CoconutError, Conflict, NotFound, Staff
from core.connection import EditPolicy
from core.job_kinds import PROJECTION_JOBS, JobKind
from core.marks import MARK_PROPERTY_ID, Projection, ProjectionIndex, parse_mark
from workers import busy_time, directory, exchange, holds
from workers.context import WorkerContext, context
from workers.held_blocks import Block, Changed, Comparison, compare, digest

log = logging.getLogger(__name__)

PAGE_SIZE = 100
# Coconut's answers that refuse one item (gone, a conflict, invalid) rather than the whole round.
REFUSED = frozenset({400, 404, 409, 422})


class DeltaFault(Exception):
    """The delta chain misbehaved (a repeated nextLink, too many pages): start over later."""


def sync_mailbox(user_id: str) -> int:
    ctx = context()
    return jobs.run_coalesced(
        ctx.redis, JobKind.SYNC_MAILBOX, user_id, lambda _: _round(ctx, user_id),
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
    start, end = busy_time.sync_window(user_id, options.sync_past_days, options.sync_future_days)
    window = f"{start.isoformat()}/{end.isoformat()}"
    state = _state(ctx, user_id)
    covers = f"{staff.id} {_zone(staff)}"  # whose blocks, in which zone
    why = _full_reason(ctx, user_id, state, window, covers)
    try:
        items, delta_link = _read_round(ctx, user_id, None if why else state["delta_link"],
                                        start, end)  # fmt: skip
    except _Stale:
        log.info("mailbox.delta_stale", extra={"mailbox": user_id})
        why = "Graph no longer knew the delta cursor"
        items, delta_link = _read_round(ctx, user_id, None, start, end)
    except DeltaFault as exc:
        ctx.redis.hset(store.mailbox_key(user_id), "fault", str(exc))
        ctx.redis.hdel(store.mailbox_key(user_id), "delta_link")
        log.warning("mailbox.delta_fault", extra={"mailbox": user_id, "reason": str(exc)})
        raise
    known = _blocks(ctx, user_id)
    marked: dict[str, tuple[str, str]] = {}
    changed: list[Changed] = []
    if why:
        comparison = _held(ctx, user_id, staff, known, start)
        known, changed = comparison.known, comparison.changed
        marked = _marked(ctx, user_id)
    outcome = _apply(ctx, user_id, staff, items, known, marked, full=bool(why),
                     show_titles=options.show_event_titles, policy=options.edit_policy)  # fmt: skip
    now = int(time.time())
    mapping: dict[str, str | int] = {
        "delta_link": delta_link, "window": window, "covers": covers, "last_sync_at": now,
        "fault": "",
    }  # fmt: skip
    if why:
        mapping |= {"cursor_at": now, "reconciled_at": now, "repaired": json.dumps(outcome.counts)}
        log.info("mailbox.reconciled", extra={"mailbox": user_id, "reason": why, **outcome.counts})
        if _both_ways(state):
            jobs.ensure_queued(ctx.queue, JobKind.PROJECT_STAFF, str(staff.id))
    ctx.redis.hset(store.mailbox_key(user_id), mapping=mapping)
    _put_back(ctx, user_id, changed, outcome)
    if why:
        _answered(ctx, user_id, state.get(requests.REQUESTED, ""))


def _staff(ctx: WorkerContext, user_id: str) -> Staff | None:
    staff_id = directory.staff_for(ctx, user_id)
    staff = ctx.staff(int(staff_id)) if staff_id else None
    if staff is None or not (staff.takes_appointments and staff.active):
        log.info("mailbox.not_covered", extra={"mailbox": user_id})
        return None
    return staff


def _full_reason(
    ctx: WorkerContext, user_id: str, state: dict[str, str], window: str, covers: str
) -> str:
    """Why this round may not trust its cursor, or "" when it may."""
    if state.get(requests.REQUESTED):
        return state.get("full_reason") or "asked for"
    if not state.get("delta_link"):
        return "no delta cursor"
    if state.get("window") != window:
        return "the sync window moved"
    if state.get("covers", covers) != covers:
        return "the mailbox's staff member or their time zone changed"
    age = time.time() - float(state.get("cursor_at") or 0)
    if age > ctx.settings.cursor_max_age_seconds:
        return f"the delta cursor is {age / 3600:.0f} hours old"
    due = refusals.next_retry(ctx.redis, user_id)
    if due is not None and due <= time.time():
        return "a refused item is due again"
    return ""


def _both_ways(state: dict[str, str]) -> bool:
    """A full round the scheduler did not ask for (a moved window, an old cursor) also
    reconciles the Coconut -> Outlook direction; an asked-for one had it queued beside it, and a
    refused item's retry concerns busy blocks only."""
    return not state.get(requests.REQUESTED) and bool(state.get("delta_link"))


_answered_script = """
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
    redis.call('HDEL', KEYS[1], ARGV[1], 'full_reason')
end
return 0
"""


def _answered(ctx: WorkerContext, user_id: str, requested: str) -> None:
    """The request this round began with is answered; one made meanwhile earns another round."""
    if requested:
        ctx.redis.eval(_answered_script, 1, store.mailbox_key(user_id), requests.REQUESTED,
                       requested)  # fmt: skip


def _state(ctx: WorkerContext, user_id: str) -> dict[str, str]:
    raw = ctx.redis.hgetall(store.mailbox_key(user_id))
    return {k.decode(): v.decode() for k, v in raw.items()}


def _held(
    ctx: WorkerContext, user_id: str, staff: Staff, recorded: dict[str, Block], since: datetime
) -> Comparison:
    """The blocks Coconut holds for the staff member, trusted over what Redis recorded (and
    recorded in its place), and which of ours someone changed or deleted in Coconut."""
    listed = list(ctx.coconut.absences(user=staff.id, source="external"))
    comparison = compare(recorded, listed, since)
    pipe = ctx.redis.pipeline()
    pipe.delete(store.block_key(user_id))
    if comparison.known:
        pipe.hset(store.block_key(user_id), mapping={
            e: json.dumps(asdict(b)) for e, b in comparison.known.items()
        })  # fmt: skip
    pipe.execute()
    return comparison


def _put_back(ctx: WorkerContext, user_id: str, changed: list[Changed], outcome: Outcome) -> None:
    """Name, in the mailbox's warning, the blocks someone changed in Coconut that this round
    put back (by the title the block shows now, never a private subject)."""
    restored = [c for c in changed if c.event_id in outcome.titles]
    if not restored:
        return
    names = ", ".join(f"'{outcome.titles[c.event_id]}' ({c.what})" for c in restored[:3])
    more = f" and {len(restored) - 3} more" if len(restored) > 3 else ""
    ctx.redis.hset(
        store.mailbox_key(user_id), "warning",
        f"busy blocks edited in Coconut were put back as Outlook has them: {names}{more}",
    )  # fmt: skip
    for change in restored:
        log.info("busy_time.put_back", extra={"mailbox": user_id, "event_id": change.event_id,
                                               "what": change.what})  # fmt: skip
        audit.emit("busy_time.put_back", mailbox=user_id, event_id=change.event_id,
                   what=change.what)  # fmt: skip


def _marked(ctx: WorkerContext, user_id: str) -> dict[str, tuple[str, str]]:
    """Our own projections in the mailbox by our mark (event id -> kind, item id): one paged
    read, so a full round never takes one for a staff member's event however little Redis
    remembers."""
    found = {}
    for marked in exchange.list_ours(ctx, user_id):
        _, kind, item_id = parse_mark(marked.mark) or ("", "", "")
        found[marked.event_id] = (kind, item_id)
    return found


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


@dataclass
class Outcome:
    """What a round changed in Coconut, and which items Coconut refused."""

    made: int = 0
    fixed: int = 0
    removed: int = 0
    refused: set[str] = field(default_factory=set)
    titles: dict[str, str] = field(default_factory=dict)  # event id -> its block's title

    @property
    def counts(self) -> dict[str, int]:
        return {"made": self.made, "fixed": self.fixed, "removed": self.removed}


def _apply(
    ctx: WorkerContext, user_id: str, staff: Staff, items: list[Event], known: dict[str, Block],
    marked: dict[str, tuple[str, str]], *, full: bool, show_titles: bool, policy: EditPolicy,
) -> Outcome:  # fmt: skip
    index = ProjectionIndex(ctx.redis)
    masters: dict[str, busy_time.Judged | None] = {}
    seen: set[str] = set()
    wanted: dict[str, tuple[AbsenceWrite, str]] = {}
    removals: set[str] = set()
    unblocked: set[str] = set()  # listed, and needing no block
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
            unblocked.add(event_id)
            continue
        if ours is not None:
            if item.change_key is not None and item.change_key != ours.change_key:
                _own_edited(ctx, user_id, ours, policy, deleted=False, subject=item.subject)
            continue
        if event_id in marked:  # ours, though the index forgot it: its own job rebuilds it
            _requeue(ctx, *marked[event_id])
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
            unblocked.add(event_id)
            continue
        occurrence = _occurrence(item)
        if occurrence is None:
            continue
        desired = busy_time.block_for(occurrence, judged, staff.id, _zone(staff))
        if desired is None:
            removals |= {event_id} & known.keys()
            unblocked.add(event_id)
        elif event_id not in known and not full and _carries_our_mark(ctx, user_id, item):
            continue
        else:
            wanted[event_id] = (desired, series)

    # Occurrences deleted from a live series get no @removed: read each one that was not listed
    # with its series, and a 404 is the proof. So for a pending block: the round that began it
    # never stored its delta link, so this one lists its event unless the event is gone.
    unlisted = [
        e for e, b in known.items()
        if e not in seen and (full or b.pending or (b.series and b.series in series_listed))
    ]  # fmt: skip
    removals |= {e for e in unlisted if _gone(ctx, user_id, e)}

    outcome = Outcome(titles={e: w.title for e, (w, _) in wanted.items()})
    for event_id, (desired, series) in wanted.items():
        try:
            done = _upsert(ctx, user_id, event_id, desired, series, known.get(event_id))
        except CoconutError as exc:
            if exc.status not in REFUSED:
                raise
            _refused(ctx, user_id, event_id, desired, exc)
            outcome.refused.add(event_id)
            continue
        outcome.made += done == "created"
        outcome.fixed += done == "updated"
    removals -= wanted.keys()
    if holds.should_hold(len(removals), len(known), ctx.settings):
        holds.hold(ctx.redis, user_id, sorted(removals), total=len(known))
        log.warning("mailbox.removals_held", extra={"mailbox": user_id, "count": len(removals)})
        removals = set()
    for event_id in removals:
        remove_block(ctx, user_id, event_id)
        outcome.removed += 1
    _settle_refusals(ctx, user_id, outcome.refused, wanted.keys() | removals | unblocked, full)
    return outcome


def _requeue(ctx: WorkerContext, kind: str, item_id: str) -> None:
    jobs.ensure_queued(ctx.queue, PROJECTION_JOBS[kind], item_id)


def _refused(
    ctx: WorkerContext, user_id: str, event_id: str, desired: AbsenceWrite, exc: CoconutError
) -> None:
    """Coconut would not take this one block: say which and why, and carry on with the rest."""
    when = desired.start.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    label = f"busy block '{desired.title}' on {when}"
    reason = f"Coconut answered {exc.status}: {exc}"
    refusal = refusals.record(ctx.redis, user_id, event_id, label=label, reason=reason,
                              status=exc.status or 0)  # fmt: skip
    log.warning(
        "busy_time.refused",
        extra={
            "mailbox": user_id,
            "event_id": event_id,
            "status": exc.status,
            "attempts": refusal.attempts,
        },
    )
    audit.emit("busy_time.refused", mailbox=user_id, event_id=event_id, status=exc.status,
               attempts=refusal.attempts)  # fmt: skip


def _settle_refusals(
    ctx: WorkerContext, user_id: str, failed: set[str], touched: set[str], full: bool
) -> None:
    """Refused items that went through, or need no block any more, are refused no longer; a
    full round read everything, so whatever it did not see refused is over."""
    settled = {r.event_id for r in refusals.refused(ctx.redis, user_id)} if full else touched
    refusals.clear(ctx.redis, user_id, settled - failed)


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
                # Its own job rebuilds the mapping.
                jobs.ensure_queued(ctx.queue, PROJECTION_JOBS[mark[1]], mark[2])
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
    ctx: WorkerContext, user_id: str, ours: Projection, policy: EditPolicy, *, deleted: bool,
    subject: str | None = None,
) -> None:  # fmt: skip
    """A staff member changed one of our projections. The warning names it by its Coconut id
    and, for an edit, the subject Outlook shows now (our own projection's, never a private
    event's: only our events reach here)."""
    what = "deleted" if deleted else "edited"
    restore = policy == EditPolicy.RESTORE
    shown = f" ('{' '.join(subject.split())[:80]}')" if subject and not deleted else ""
    warning = f"Coconut {ours.kind} {ours.item_id}{shown} was {what} in Outlook; " + (
        "it was put back as Coconut has it" if restore else "the edit is kept for now"
    )
    ctx.redis.hset(store.mailbox_key(user_id), "warning", warning)
    log.info("projection.edited_in_outlook", extra={"mailbox": user_id, "kind": ours.kind})
    if restore:
        jobs.ensure_queued(ctx.queue, PROJECTION_JOBS[ours.kind], ours.item_id)


# ---------------------------------------------------------------- Coconut writes


def _blocks(ctx: WorkerContext, user_id: str) -> dict[str, Block]:
    raw = ctx.redis.hgetall(store.block_key(user_id))
    return {k.decode(): Block(**json.loads(v)) for k, v in raw.items()}


def _upsert(
    ctx: WorkerContext, user_id: str, event_id: str, desired: AbsenceWrite, series: str,
    known: Block | None,
) -> str:  # fmt: skip
    """Make Coconut hold the block; returns "created", "updated" or "" (nothing to write)."""
    wanted = digest(desired)
    version = desired.external_version or ""
    if known is not None and known.digest == wanted:
        if known.version != version:  # nothing for Coconut, but the next echo is known
            ctx.redis.hset(
                store.block_key(user_id),
                event_id,
                json.dumps(asdict(replace(known, version=version))),
            )
        return ""
    absence = None
    if known is not None and not known.pending:
        try:
            absence = ctx.coconut.update_absence(known.absence_id, desired)
        except NotFound:  # deleted in Coconut under us: made again, not updated
            log.info("busy_time.recreated", extra={"mailbox": user_id, "event_id": event_id})
    if absence is None:
        # Pending first: should this worker die before Coconut's answer is recorded, the next
        # round still knows a block may exist for this event, and removes it if it must go.
        pending = Block(0, series, "")
        ctx.redis.hset(store.block_key(user_id), event_id, json.dumps(asdict(pending)))
        try:
            absence = ctx.coconut.create_absence(desired)
        except Conflict as exc:
            # Created by an earlier round whose mapping was lost (a crash, a stale delta).
            if exc.existing_id is None:
                raise
            absence = ctx.coconut.update_absence(exc.existing_id, desired)
        except CoconutError as exc:
            if exc.status in REFUSED:
                ctx.redis.hdel(store.block_key(user_id), event_id)  # refused: nothing was made
            raise
        done = "created"
    else:
        done = "updated"
    block = Block(absence.id, series, wanted, version)
    ctx.redis.hset(store.block_key(user_id), event_id, json.dumps(asdict(block)))
    audit.emit(
        f"busy_time.{done}", mailbox=user_id, event_id=event_id, absence_id=str(absence.id),
        staff_id=str(desired.user_id),
    )  # fmt: skip
    return done


def forget_mailbox(user_id: str) -> int:
    """A mailbox no longer matched to anyone: its busy blocks and subscription go."""
    from subscriptions import manager

    ctx = context()
    ctx.redis.delete(store.dirty_key("forget", user_id))
    with jobs.item_lock(ctx.redis, "mailbox", user_id):
        if ctx.redis.hexists(store.mailbox_key(user_id), "staff_id"):
            return 0  # matched again meanwhile
        removed = 0
        for event_id in ctx.redis.hkeys(store.block_key(user_id)):
            remove_block(ctx, user_id, event_id.decode())
            removed += 1
        record = manager.for_mailbox(ctx, user_id)
        if record is not None:
            manager.delete(ctx, record.subscription_id)
        requests.forget_cursor(ctx.redis, user_id)
    log.info("mailbox.forgotten", extra={"mailbox": user_id, "blocks": removed})
    return removed


def remove_block(ctx: WorkerContext, user_id: str, event_id: str) -> None:
    raw = ctx.redis.hget(store.block_key(user_id), event_id)
    if raw is None:
        return
    block = Block(**json.loads(raw))
    removed = [block.absence_id]
    if block.pending:  # the create may have happened: Coconut knows it by the event's id
        removed = [a.id for a in ctx.coconut.absences(source="external", external_id=event_id)]
    for absence_id in removed:
        ctx.coconut.delete_absence(absence_id)
    ctx.redis.hdel(store.block_key(user_id), event_id)
    for absence_id in removed:
        audit.emit(
            "busy_time.removed", mailbox=user_id, event_id=event_id, absence_id=str(absence_id)
        )
