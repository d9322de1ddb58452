"""Job `project_staff(staff_id)`: all of a staff member's Coconut items into their mailbox at once.

The initial sync (or anything else with many items of one mailbox to write) queues this one job
per staff member instead of one `sync_appointment` job per item. It reads which of our events
the mailbox already holds in one paged listing (our mark, expanded) instead of a look-up per
item, and writes what is missing or different in `$batch` calls of 20 (workers.exchange). The
rules are the single-item path's (workers.appointments), for this one mailbox:

- an event the listing shows is adopted (its mapping rebuilt), never created a second time;
  copies of one mark (a crash between two generations) are deleted down to one;
- an event is written only when it differs from what we last wrote or its changeKey moved (a
  staff member edited it); a mapped event the listing does not show is patched, and only its
  404 re-creates it, with the next generation's transactionId;
- every create is recorded as pending first and carries our mark and its deterministic
  transactionId, and each changeKey we write is stored (core.marks.ProjectionIndex) as soon as
  its batch answers, so the mailbox's delta round recognises our own writes.

Why the item locks, and why Coconut is listed twice: a per-item job (core.jobs.run_coalesced)
holds its item's lock for its whole round, and this job holds the locks of every item it writes
for its whole write (core.jobs.item_locks: sorted, so two of these jobs sharing a multi-staff
appointment never wait on each other in a circle). So a webhook's `sync_appointment` and this
job never both find no event and both create one. The first listing only says which locks to
take; the second, under the locks, is the state written: a per-item job that finished before
the locks were taken wrote newer state than the first listing, which must not be written over,
and any change after the second listing queued a per-item job (its webhook) that runs once the
locks are released and converges the item in every mailbox. Items the second listing no longer
shows, or that Graph refuses, are handed to their own per-item job. Trusting transactionId
alone to dedupe (no listing) was rejected: Graph does not document how long it remembers one.

Per-item dirty flags are left alone: this job converges one mailbox, an appointment can have
several. Progress for the initial sync is one marker per (staff member, item), cleared when
the round completes (core.progress reads them like dirty flags).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from kiota_abstractions.request_information import RequestInformation

from core import jobs, store
from core.coconut_models import Staff
from core.connection import EditPolicy
from core.job_kinds import PROJECTION_JOBS, JobKind
from core.marks import Projection, ProjectionIndex, mark_value, parse_mark, transaction_id
from workers import appointments, exchange
from workers.context import WorkerContext, context
from workers.projection import EventDraft, absence_event, appointment_event, is_live

log = logging.getLogger(__name__)

PROGRESS_KIND = "initial_item"


def project_staff(staff_id: str) -> int:
    """Make the staff member's mailbox hold every upcoming appointment and Coconut absence of
    theirs exactly as `project(item)` says."""
    ctx = context()
    return jobs.run_coalesced(
        ctx.redis, JobKind.PROJECT_STAFF, staff_id, lambda _: _round(ctx, staff_id)
    )


def progress_member(staff_id: str, kind: str, item_id: str) -> str:
    """The initial sync's progress entry for one item of one staff member (`kind:item`, read by
    core.progress as a dirty flag)."""
    return f"{PROGRESS_KIND}:{staff_id}-{kind}-{item_id}"


@dataclass(frozen=True)
class Item:
    kind: str  # "appointment" or "absence"
    item_id: str
    draft: EventDraft | None  # None: this mailbox should hold no event for it

    @property
    def key(self) -> tuple[str, str]:
        return (self.kind, self.item_id)


@dataclass(frozen=True)
class Write:
    """One request to make: create, update or delete one event of one item."""

    item: Item
    action: str  # "create", "update", "remove" (the item's event goes) or "drop" (a copy goes)
    event_id: str = ""
    base: Projection | None = None  # the mapping this write replaces
    generation: int = 0


def items_of(ctx: WorkerContext, staff: Staff) -> list[Item]:
    """The staff member's upcoming appointments and Coconut absences, as Coconut has them now."""
    since = datetime.now(UTC) - timedelta(days=ctx.options.sync_past_days)
    url, templates = ctx.settings.coconut_app_url, appointments.templates(ctx)
    found = [
        Item("appointment", str(a.id),
             appointment_event(a, url, templates)
             if is_live(a) and staff.id in a.staff_ids else None)
        for a in ctx.coconut.appointments(user=staff.id, start_after=since)
    ]  # fmt: skip
    found += [
        Item("absence", str(b.id), absence_event(b) if b.user_id == staff.id else None)
        for b in ctx.coconut.absences(user=staff.id, source="coconut")
    ]
    return found


# ---------------------------------------------------------------- one round


def _round(ctx: WorkerContext, staff_id: str) -> None:
    if not ctx.syncing:
        _clear_progress(ctx, staff_id)  # nothing to wait for: the next Authorize starts over
        return
    staff = ctx.coconut.get_user(int(staff_id))
    mailbox = appointments.mailbox_of(ctx, staff)
    if staff is not None and mailbox is not None:
        first = items_of(ctx, staff)
        unlisted: dict[str, list[exchange.Marked]] = {}
        with jobs.item_locks(ctx.redis, [item.key for item in first]):
            now = {item.key: item for item in items_of(ctx, staff)}
            for kind, item_id in {item.key for item in first} - now.keys():
                _hand_off(ctx, kind, item_id)  # deleted or reassigned meanwhile
            locked = [now[item.key] for item in first if item.key in now]
            appointments.guarded(ctx, mailbox, lambda: _converge(ctx, mailbox, locked, unlisted))
        # After the first locks are let go, never while holding them: two jobs taking two sets
        # each could otherwise wait on each other.
        appointments.guarded(ctx, mailbox, lambda: _claim_unlisted(ctx, mailbox, unlisted))
    _clear_progress(ctx, staff_id)


def _converge(
    ctx: WorkerContext, mailbox: str, items: list[Item], unlisted: dict[str, list[exchange.Marked]]
) -> None:
    """Write what the items need; our events for other items are left in `unlisted`."""
    deployment = ctx.settings.deployment_id
    listed: dict[str, list[exchange.Marked]] = defaultdict(list)
    for marked in exchange.list_ours(ctx, mailbox):
        listed[marked.mark].append(marked)
    index = ProjectionIndex(ctx.redis)
    known = {(p.kind, p.item_id): p for p in index.in_mailbox(mailbox)}
    writes: list[Write] = []
    keep_edits = ctx.options.edit_policy == EditPolicy.KEEP
    for item in items:
        found = listed.pop(mark_value(deployment, item.kind, item.item_id), [])
        writes += _plan(index, mailbox, item, found, known.get(item.key), keep_edits)
    unlisted.update(listed)
    done = _write(ctx, index, mailbox, writes)
    if done:
        appointments.clear_problem(ctx, mailbox)
    log.info("bulk.projected", extra={"mailbox": mailbox, "items": len(items), "writes": done})


def _plan(
    index: ProjectionIndex, mailbox: str, item: Item, found: list[exchange.Marked],
    known: Projection | None, keep_edits: bool = False,
) -> list[Write]:  # fmt: skip
    """What this mailbox needs for one item, given the events the listing shows for it. With
    `keep_edits` (the edit policy "keep"), an event we wrote as the item still is stays as the
    staff member left it, edited or deleted."""
    if (
        keep_edits and known is not None and item.draft is not None
        and not known.pending and known.digest == item.draft.digest
    ):  # fmt: skip
        return []
    if item.draft is None:
        gone = {m.event_id for m in found} | ({known.event_id} if known and not known.pending
                                              else set())  # fmt: skip
        if not gone and known is not None:  # a create that left nothing behind
            index.remove(known)
        return [Write(item, "remove", event_id, known) for event_id in sorted(gone)]
    if not found:
        if known is not None and known.pending:  # made again with the same transactionId
            return [Write(item, "create", base=known, generation=known.generation)]
        if known is not None:  # mapped but not listed: deleted in Outlook, the patch's 404 says
            return [Write(item, "update", known.event_id, known, known.generation)]
        return [Write(item, "create")]
    keep = next((m for m in found if known and m.event_id == known.event_id), found[0])
    drops = [Write(item, "drop", m.event_id) for m in found if m is not keep]
    base = known
    if known is None or known.event_id != keep.event_id:
        generation = known.generation if known else 0
        base = Projection(item.kind, item.item_id, mailbox, keep.event_id, keep.change_key,
                          generation)  # fmt: skip
        index.save(base, replaces=known)
        log.info("projection.adopted", extra={"kind": item.kind, "item": item.item_id,
                                              "mailbox": mailbox})  # fmt: skip
    assert base is not None
    if base.digest == item.draft.digest and keep.change_key == base.change_key:
        return drops
    return [*drops, Write(item, "update", keep.event_id, base, base.generation)]


def _write(ctx: WorkerContext, index: ProjectionIndex, mailbox: str, writes: list[Write]) -> int:
    """Send the writes in batches; a patch whose event is gone earns a create in a later batch.
    Returns how many writes went through."""
    done = 0
    pending = writes
    while pending:
        follow_ups: list[Write] = []
        for start in range(0, len(pending), exchange.BATCH_LIMIT):
            chunk = pending[start : start + exchange.BATCH_LIMIT]
            _record_pending(index, mailbox, chunk)
            requests = {str(n): _request(ctx, mailbox, w) for n, w in enumerate(chunk)}
            answers = exchange.send_batch(ctx, mailbox, requests)
            for n, write in enumerate(chunk):
                follow_up = _record(ctx, index, mailbox, write, answers[str(n)])
                if follow_up is not None:
                    follow_ups.append(follow_up)
                done += answers[str(n)].ok
        pending = follow_ups
    return done


def _record_pending(index: ProjectionIndex, mailbox: str, chunk: list[Write]) -> None:
    """Creates are recorded as pending before they are sent, as the single-item path does: a
    worker that dies before the answer leaves a record saying where our mark must be looked
    for, also if the item no longer belongs in this mailbox by the time it is retried."""
    for write in chunk:
        if write.action == "create":
            item = write.item
            pending = Projection(item.kind, item.item_id, mailbox, "", "", write.generation)
            index.save(pending, replaces=write.base)


def _request(ctx: WorkerContext, mailbox: str, write: Write) -> RequestInformation:
    item = write.item
    if write.action == "create":
        assert item.draft is not None
        deployment = ctx.settings.deployment_id
        mark = mark_value(deployment, item.kind, item.item_id)
        tx = transaction_id(deployment, item.kind, item.item_id, mailbox, write.generation)
        return exchange.create_request(ctx, mailbox, item.draft, mark, tx)
    if write.action == "update":
        assert item.draft is not None
        return exchange.update_request(ctx, mailbox, write.event_id, item.draft)
    return exchange.delete_request(ctx, mailbox, write.event_id)


def _record(
    ctx: WorkerContext, index: ProjectionIndex, mailbox: str, write: Write,
    answer: exchange.Answer,
) -> Write | None:  # fmt: skip
    """Remember what a write did; the follow-up write it needs, if any."""
    item = write.item
    if write.action in ("remove", "drop"):
        if answer.ok or answer.status == 404:  # gone already is what we wanted
            if write.action == "remove" and write.base is not None:
                index.remove(write.base)
            return None
    elif answer.ok:
        assert item.draft is not None
        written = answer.written()
        index.save(
            Projection(item.kind, item.item_id, mailbox, written.event_id, written.change_key,
                       write.generation, item.draft.digest),
            replaces=write.base,
        )  # fmt: skip
        return None
    elif write.action == "update" and answer.status == 404 and write.base is not None:
        log.info("projection.recreated", extra={"kind": item.kind, "item": item.item_id,
                                                "mailbox": mailbox})  # fmt: skip
        return Write(item, "create", base=write.base, generation=write.base.generation + 1)
    # Graph refused this one request: its own job retries it and, if it keeps failing, lists it
    # in the failed registry under its own name, without holding up the staff member's others.
    log.warning("bulk.refused", extra={"kind": item.kind, "item": item.item_id,
                                       "mailbox": mailbox, "status": answer.status})  # fmt: skip
    _hand_off(ctx, item.kind, item.item_id)
    return None


def _hand_off(ctx: WorkerContext, kind: str, item_id: str) -> None:
    jobs.ensure_queued(ctx.queue, PROJECTION_JOBS[kind], item_id)


def _claim_unlisted(
    ctx: WorkerContext, mailbox: str, listed: dict[str, list[exchange.Marked]]
) -> None:
    """Our events in the mailbox for items Coconut does not list for this staff member
    (cancelled without a webhook, reassigned): their own jobs decide, and must find them. A
    lost or stale Redis may not know an event is here, so under the item's lock its mapping in
    this mailbox is taken from the listing (the one it knew, else the first) and any other copy
    deleted: one event per item and mailbox. Past appointments, outside what Coconut was asked
    for, are left as they are."""
    since = datetime.now(UTC) - timedelta(days=ctx.options.sync_past_days)
    claims: dict[tuple[str, str], list[exchange.Marked]] = {}
    for mark, events in listed.items():
        parsed = parse_mark(mark)
        if parsed is None:
            continue
        _, kind, item_id = parsed
        if kind == "appointment" and all(e.start is not None and e.start < since for e in events):
            continue
        claims[(kind, item_id)] = events
    if not claims:
        return
    index = ProjectionIndex(ctx.redis)
    with jobs.item_locks(ctx.redis, list(claims)):
        for (kind, item_id), events in claims.items():
            known = index.for_item(kind, item_id).get(mailbox)
            keep = next((e for e in events if known and e.event_id == known.event_id), events[0])
            if known is None or known.event_id != keep.event_id:
                generation = known.generation if known else 0
                index.save(Projection(kind, item_id, mailbox, keep.event_id, keep.change_key,
                                      generation), replaces=known)  # fmt: skip
            for extra in events:
                if extra.event_id != keep.event_id:
                    exchange.delete(ctx, mailbox, extra.event_id)
    for kind, item_id in claims:
        _hand_off(ctx, kind, item_id)


def _clear_progress(ctx: WorkerContext, staff_id: str) -> None:
    prefix = f"{PROGRESS_KIND}:".encode()
    members = [
        m
        for m in ctx.redis.smembers(store.initial_sync_key("items", staff_id))
        if m.startswith(prefix)
    ]
    if members:
        ctx.redis.delete(*(store.dirty_key(*m.decode().split(":", 1)) for m in members))
