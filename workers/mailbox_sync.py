"""Job `sync_mailbox(user_id)`: a staff member's Outlook events become busy time in Coconut.

One round reads a calendarView delta over the sync window to its end (workers.outlook_reads),
plans what Coconut must hold (workers.block_plan, with the Graph reads it asks for) and applies
it (workers.busy_blocks). For each instance:

- our own projection (the index knows its id) is skipped when its changeKey is the one we
  wrote; a staff member's edit or deletion is recorded as a warning and, unless the admin chose
  to keep such edits, its Coconut item is queued to be put back;
- an event carrying our mark that the index lost is never turned into busy time;
- anything else becomes one external absence on the staff member's Coconut calendar, updated
  and removed with it (workers.busy_time decides what blocks and what it says).

Deletion needs proof: a block goes only on `@removed`, a 404 when the event is read, or the
event itself saying it no longer blocks. A round that would remove more than a set share of the
mailbox's blocks holds those removals until an admin releases them (workers.mass_delete_guard).

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

No mailbox stays unsynced because of Graph's delta paging (research/graph-reality.md item 1):
a delta round that passes its bounds or misbehaves (workers.outlook_reads.DeltaFault) is
replaced by a calendarView read of the whole window, and that round is a full one, with the
same comparison and proofs. The mailbox's row on User Accounts warns, the metric
exsync_delta_fallbacks_total counts it, and its later rounds read by calendarView too until a
back-off passes (EXSYNC_DELTA_RETRY_SECONDS, doubled after each further failure, at most a day;
an asked-for round does not wait): then delta is tried again, and a good delta round clears the
warning.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from datetime import datetime

from core import audit, jobs, refusals, store
from core import reconcile as requests
from core.coconut.models import Staff
from core.connection import EditPolicy
from core.job_kinds import PROJECTION_JOBS, JobKind
from core.metrics import DELTA_FALLBACKS
from core.sync_records import Block, dump
from workers import block_plan, busy_blocks, busy_time, directory, exchange, outlook_reads
from workers.block_plan import Instance, OwnEdit, Reads, RoundPlan
from workers.context import WorkerContext, context
from workers.held_blocks import Changed, Comparison, compare
from workers.marks import parse_mark
from workers.projection_index import ProjectionIndex

log = logging.getLogger(__name__)

# The planner asks for series masters, then for marks of occurrences it could judge only then:
# every read it asks for is answered before it plans again, so three passes always suffice.
PLAN_PASSES = 3
# A mailbox whose delta failed is read by calendarView for a while: at most this long at a time.
DELTA_RETRY_MAX_SECONDS = 86_400.0
DELTA_WARNING = "Graph's delta paging misbehaved"  # how our warning starts, to clear only ours


def sync_mailbox(user_id: str) -> int:
    ctx = context()
    return jobs.run_coalesced(
        ctx.redis, JobKind.SYNC_MAILBOX, user_id, lambda _: _round(ctx, user_id),
        settle=ctx.settings.coalesce_settle_seconds,
    )  # fmt: skip


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
    asked = _full_reason(ctx, user_id, state, window, covers)
    read = _read(ctx, user_id, state, asked, start, end)
    items, delta_link, why = read.items, read.delta_link, read.why
    known = busy_blocks.recorded(ctx, user_id)
    marked: dict[str, tuple[str, str]] = {}
    changed: list[Changed] = []
    if why:
        comparison = _held(ctx, user_id, staff, known, start)
        known, changed = comparison.known, comparison.changed
        marked = _marked(ctx, user_id)
    ours = ProjectionIndex(ctx.redis).by_events(user_id, [i.event_id for i in items])
    mailbox = block_plan.Mailbox(
        staff.id, _zone(staff), ctx.settings.deployment_id, known, ours, marked, full=bool(why),
        show_titles=options.show_event_titles,
    )  # fmt: skip
    plan = _plan(ctx, user_id, items, mailbox)
    _projections_touched(ctx, user_id, plan, options.edit_policy)
    outcome = busy_blocks.apply(ctx, user_id, plan, known, full=bool(why))
    now = int(time.time())
    mapping: dict[str, str | int] = {
        "delta_link": delta_link, "window": window, "covers": covers, "last_sync_at": now,
        "fault": "",
    }  # fmt: skip
    if why:
        mapping |= {"cursor_at": now, "reconciled_at": now, "repaired": json.dumps(outcome.counts)}
        log.info("mailbox.reconciled", extra={"mailbox": user_id, "reason": why, **outcome.counts})
        if (asked or not read.by_window) and _both_ways(state):
            jobs.ensure_queued(ctx.queue, JobKind.PROJECT_STAFF, str(staff.id))
    ctx.redis.hset(store.mailbox_key(user_id), mapping=mapping)
    if delta_link and state.get("delta_failures"):
        _delta_recovered(ctx, user_id)
    _put_back(ctx, user_id, changed, outcome)
    if why:
        _answered(ctx, user_id, state.get(requests.REQUESTED, ""))


@dataclass(frozen=True)
class Read:
    """What the round read: by delta, or by calendarView when delta misbehaves."""

    items: list[Instance]
    delta_link: str  # the next round's cursor, "" after a calendarView read
    why: str  # why the round is full, "" when it is not
    by_window: bool = False  # read by calendarView: full only because delta misbehaved


def _read(
    ctx: WorkerContext, user_id: str, state: dict[str, str], why: str, start: datetime,
    end: datetime,
) -> Read:  # fmt: skip
    """The round's instances: a delta round (a fresh one when `why` says the cursor cannot be
    trusted, or Graph forgot it), else, when delta misbehaves or is waiting out its back-off,
    the whole window by calendarView, and the round is full."""
    paused = _delta_paused(state)
    if paused:
        DELTA_FALLBACKS.labels(reason="backoff").inc()
        log.info("mailbox.delta_backoff", extra={"mailbox": user_id, "reason": paused})
        _warn(ctx, user_id, state, paused, float(state.get("delta_retry_at") or 0))
        items = _window(ctx, user_id, paused, start, end)
        return Read(items, "", _by_window(why, paused), by_window=True)
    try:
        try:
            items, link = outlook_reads.read_round(
                ctx, user_id, None if why else state["delta_link"], start, end
            )
        except outlook_reads.Stale:
            log.info("mailbox.delta_stale", extra={"mailbox": user_id})
            why = "Graph no longer knew the delta cursor"
            items, link = outlook_reads.read_round(ctx, user_id, None, start, end)
        return Read(items, link, why)
    except outlook_reads.DeltaFault as exc:
        fault = str(exc)
        DELTA_FALLBACKS.labels(reason=exc.kind).inc()
        log.warning("mailbox.delta_fault", extra={"mailbox": user_id, "reason": fault})
        failures = int(state.get("delta_failures") or 0) + 1
        retry_at = time.time() + backoff(ctx.settings.delta_retry_seconds, failures)
        ctx.redis.hset(store.mailbox_key(user_id), mapping={
            "delta_link": "", "delta_fault": fault, "delta_failures": failures,
            "delta_retry_at": retry_at,
        })  # fmt: skip
        _warn(ctx, user_id, state, fault, retry_at)
        items = _window(ctx, user_id, fault, start, end)
        return Read(items, "", _by_window(why, fault), by_window=True)


def _window(
    ctx: WorkerContext, user_id: str, fault: str, start: datetime, end: datetime
) -> list[Instance]:
    """The calendarView read in delta's place; if it fails too, the job fails with both named
    in the mailbox's `fault` (`exsync status`), and a later round starts over."""
    try:
        return outlook_reads.read_window(ctx, user_id, start, end)
    except Exception as exc:
        problem = f"delta misbehaved ({fault}) and calendarView failed too: {exc}"
        ctx.redis.hset(store.mailbox_key(user_id), "fault", problem[:500])
        raise


def backoff(base: float, failures: int) -> float:
    """How long delta waits after its `failures`-th failure in a row: doubling, at most a day."""
    return float(min(DELTA_RETRY_MAX_SECONDS, base * 2 ** min(failures - 1, 32)))


def _delta_paused(state: dict[str, str]) -> str:
    """Why delta waits on this mailbox (its last fault), or "" when it may be tried: its
    back-off passed, or an admin asked for this round."""
    if state.get(requests.REQUESTED):
        return ""
    if float(state.get("delta_retry_at") or 0) <= time.time():
        return ""
    return state.get("delta_fault") or "delta failed lately"


def _by_window(why: str, fault: str) -> str:
    read = f"read whole by calendarView, as delta misbehaved ({fault})"
    return f"{why}; {read}" if why else read


def _warn(
    ctx: WorkerContext, user_id: str, state: dict[str, str], fault: str, retry_at: float
) -> None:
    """Name the mailbox on its staff member's User Accounts row. Written before the round
    applies, so a warning about one of its items (an own edit, a block put back) wins."""
    address = state.get("address") or user_id
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(retry_at))
    ctx.redis.hset(
        store.mailbox_key(user_id), "warning",
        f"{DELTA_WARNING} for {address} ({fault}): it is read whole by calendarView instead, "
        f"and delta is tried again after {when}",
    )  # fmt: skip


_recovered_script = """
local warning = redis.call('HGET', KEYS[1], 'warning')
if warning and string.sub(warning, 1, string.len(ARGV[1])) == ARGV[1] then
    redis.call('HDEL', KEYS[1], 'warning')
end
redis.call('HDEL', KEYS[1], 'delta_fault', 'delta_failures', 'delta_retry_at')
return 0
"""


def _delta_recovered(ctx: WorkerContext, user_id: str) -> None:
    """Delta works on the mailbox again: its back-off and our warning go (another stays)."""
    ctx.redis.eval(_recovered_script, 1, store.mailbox_key(user_id), DELTA_WARNING)
    log.info("mailbox.delta_recovered", extra={"mailbox": user_id})


def _plan(
    ctx: WorkerContext, user_id: str, items: list[Instance], mailbox: block_plan.Mailbox
) -> RoundPlan:
    """Plan the round, making the Graph reads the planner asks for between its passes."""
    answered = Reads()
    for _ in range(PLAN_PASSES):
        planned = block_plan.plan(items, mailbox, answered)
        if isinstance(planned, RoundPlan):
            return planned
        outlook_reads.answer(ctx, user_id, planned, answered)
    raise RuntimeError(f"the round of {user_id} still needed reads after {PLAN_PASSES} passes")


def _projections_touched(
    ctx: WorkerContext, user_id: str, plan: RoundPlan, policy: EditPolicy
) -> None:
    for edit in plan.own_edits:
        _own_edited(ctx, user_id, edit, policy)
    for kind, item_id in plan.requeue:  # ours: its own job rebuilds the mapping
        jobs.ensure_queued(ctx.queue, PROJECTION_JOBS[kind], item_id)


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
            e: dump(b) for e, b in comparison.known.items()
        })  # fmt: skip
    pipe.execute()
    return comparison


def _put_back(
    ctx: WorkerContext, user_id: str, changed: list[Changed], outcome: busy_blocks.Outcome
) -> None:
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


def _own_edited(ctx: WorkerContext, user_id: str, edit: OwnEdit, policy: EditPolicy) -> None:
    """A staff member changed one of our projections. The warning names it by its Coconut id
    and, for an edit, the subject Outlook shows now (our own projection's, never a private
    event's: only our events reach here)."""
    ours, subject, deleted = edit.projection, edit.subject, edit.deleted
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


def _zone(staff: Staff) -> str:
    return busy_time.iana_zone(staff.timezone)
