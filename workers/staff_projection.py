"""Job `project_staff(staff_id)`: all of a staff member's Coconut items into their mailbox at once.

The initial sync (or anything else with many items of one mailbox to write) queues this one job
per staff member instead of one `sync_appointment` job per item. It reads which of our events
the mailbox already holds in one paged listing (our mark, expanded) instead of a look-up per
item, plans each item as the single-item path does (workers.projection_plan, with the listing
as what the mailbox shows), and writes what is missing or different in `$batch` calls of 20
(workers.projection_writes).

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

from core import jobs, store
from core.connection import EditPolicy
from core.job_kinds import PROJECTION_JOBS, JobKind
from core.sync_records import Projection
from workers import directory, exchange, mailbox_problems
from workers.coconut_items import items_of, window_start
from workers.context import WorkerContext, context
from workers.marks import mark_value, parse_mark
from workers.projection_index import ProjectionIndex
from workers.projection_plan import Item, plan
from workers.projection_writes import carry_out

log = logging.getLogger(__name__)

PROGRESS_KIND = "initial_item"


def project_staff(staff_id: str) -> int:
    """Make the staff member's mailbox hold every upcoming appointment and Coconut absence of
    theirs exactly as workers.projection says."""
    ctx = context()
    return jobs.run_coalesced(
        ctx.redis, JobKind.PROJECT_STAFF, staff_id, lambda _: _round(ctx, staff_id)
    )


def progress_member(staff_id: str, kind: str, item_id: str) -> str:
    """The initial sync's progress entry for one item of one staff member (`kind:item`, read by
    core.progress as a dirty flag)."""
    return f"{PROGRESS_KIND}:{staff_id}-{kind}-{item_id}"


def _round(ctx: WorkerContext, staff_id: str) -> None:
    if not ctx.syncing:
        _clear_progress(ctx, staff_id)  # nothing to wait for: the next Authorize starts over
        return
    staff = ctx.coconut.get_user(int(staff_id))
    mailbox = directory.mailbox_of(ctx, staff)
    if staff is not None and mailbox is not None:
        first = items_of(ctx, staff)
        unlisted: dict[str, list[exchange.Marked]] = {}
        with jobs.item_locks(ctx.redis, [item.key for item in first]):
            now = {item.key: item for item in items_of(ctx, staff)}
            for kind, item_id in {item.key for item in first} - now.keys():
                _hand_off(ctx, kind, item_id)  # deleted or reassigned meanwhile
            locked = [now[item.key] for item in first if item.key in now]
            mailbox_problems.guard(ctx, mailbox, lambda: _converge(ctx, mailbox, locked, unlisted))
        # After the first locks are let go, never while holding them: two jobs taking two sets
        # each could otherwise wait on each other.
        mailbox_problems.guard(ctx, mailbox, lambda: _claim_unlisted(ctx, mailbox, unlisted))
    _clear_progress(ctx, staff_id)


def _converge(
    ctx: WorkerContext, mailbox: str, items: list[Item], unlisted: dict[str, list[exchange.Marked]]
) -> None:
    """Write what the items need; our events for other items are left in `unlisted`."""
    deployment = ctx.settings.deployment_id
    listed: dict[str, list[exchange.Marked]] = defaultdict(list)
    for marked in exchange.list_ours(ctx, mailbox):
        listed[marked.mark].append(marked)
    known = {(p.kind, p.item_id): p for p in ProjectionIndex(ctx.redis).in_mailbox(mailbox)}
    keep_edits = ctx.options.edit_policy == EditPolicy.KEEP
    writes = []
    for item in items:
        found = listed.pop(mark_value(deployment, item.kind, item.item_id), [])
        writes += plan(mailbox, item, known.get(item.key), found, keep_edits)
    unlisted.update(listed)
    done = carry_out(ctx, mailbox, writes, batch=True)
    log.info("bulk.projected", extra={"mailbox": mailbox, "items": len(items), "writes": done})


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
    since = window_start(ctx)
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
        for m in ctx.redis.smembers(store.initial_sync_items_key(staff_id))
        if m.startswith(prefix)
    ]
    if members:
        ctx.redis.delete(*(store.dirty_key(*m.decode().split(":", 1)) for m in members))
