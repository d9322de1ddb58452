"""Busy blocks in Coconut: carrying out a mailbox round's plan (workers.block_plan) as
external absences on the staff member's calendar, and the record of each one we wrote.

A block is recorded as pending before it is created: should the worker die before Coconut's
answer is recorded, the next round still knows a block may exist for the event and removes it
if it must go. A write Coconut refuses (400, 404, 409, 422) fails that block alone
(core.refusals): the rest of the round applies and a later full round tries it again. A round
that would remove more than a set share of the mailbox's blocks holds those removals until an
admin releases them (workers.mass_delete_guard).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from datetime import UTC

from core import audit, refusals, store
from core.coconut.models import AbsenceWrite, CoconutError, Conflict, NotFound
from core.sync_records import Block, dump, load
from workers import mass_delete_guard
from workers.block_plan import RoundPlan
from workers.context import WorkerContext
from workers.held_blocks import digest

log = logging.getLogger(__name__)

# Coconut's answers that refuse one item (gone, a conflict, invalid) rather than the whole round.
REFUSED = frozenset({400, 404, 409, 422})


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


def recorded(ctx: WorkerContext, user_id: str) -> dict[str, Block]:
    raw = ctx.redis.hgetall(store.block_key(user_id))
    return {k.decode(): load(Block, v) for k, v in raw.items()}


def apply(
    ctx: WorkerContext, user_id: str, plan: RoundPlan, known: dict[str, Block], *, full: bool
) -> Outcome:
    """Make Coconut hold the plan's blocks and drop its removals."""
    outcome = Outcome(titles={e: w.title for e, (w, _) in plan.wanted.items()})
    for event_id, (desired, series) in plan.wanted.items():
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
    removals = plan.removals
    if mass_delete_guard.should_hold(len(removals), len(known), ctx.settings):
        mass_delete_guard.hold(ctx.redis, user_id, sorted(removals), total=len(known))
        log.warning("mailbox.removals_held", extra={"mailbox": user_id, "count": len(removals)})
        removals = set()
    for event_id in removals:
        remove(ctx, user_id, event_id)
        outcome.removed += 1
    touched = plan.wanted.keys() | removals | plan.unblocked
    _settle_refusals(ctx, user_id, outcome.refused, touched, full)
    return outcome


def remove(ctx: WorkerContext, user_id: str, event_id: str) -> None:
    """The block we wrote for the event goes from Coconut, and our record of it."""
    raw = ctx.redis.hget(store.block_key(user_id), event_id)
    if raw is None:
        return
    block = load(Block, raw)
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
                store.block_key(user_id), event_id, dump(replace(known, version=version))
            )
        return ""
    absence = None
    if known is not None and not known.pending:
        try:
            absence = ctx.coconut.update_absence(known.absence_id, desired)
        except NotFound:  # deleted in Coconut under us: made again, not updated
            log.info("busy_time.recreated", extra={"mailbox": user_id, "event_id": event_id})
    if absence is None:
        ctx.redis.hset(store.block_key(user_id), event_id, dump(Block(0, series, "")))
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
    ctx.redis.hset(store.block_key(user_id), event_id, dump(block))
    audit.emit(
        f"busy_time.{done}", mailbox=user_id, event_id=event_id, absence_id=str(absence.id),
        staff_id=str(desired.user_id),
    )  # fmt: skip
    return done


def _refused(
    ctx: WorkerContext, user_id: str, event_id: str, desired: AbsenceWrite, exc: CoconutError
) -> None:
    """Coconut would not take this one block: say which and why, and carry on with the rest."""
    when = desired.start.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    label = f"busy block '{desired.title}' on {when}"
    reason = f"Coconut answered {exc.status}: {exc}"
    refusal = refusals.record(ctx.redis, user_id, event_id, label=label, reason=reason,
                              status=exc.status or 0)  # fmt: skip
    facts = {"mailbox": user_id, "event_id": event_id, "status": exc.status}
    log.warning("busy_time.refused", extra={**facts, "attempts": refusal.attempts})
    audit.emit("busy_time.refused", mailbox=user_id, event_id=event_id, status=exc.status,
               attempts=refusal.attempts)  # fmt: skip


def _settle_refusals(
    ctx: WorkerContext, user_id: str, failed: set[str], touched: set[str], full: bool
) -> None:
    """Refused items that went through, or need no block any more, are refused no longer; a
    full round read everything, so whatever it did not see refused is over."""
    settled = {r.event_id for r in refusals.refused(ctx.redis, user_id)} if full else touched
    refusals.clear(ctx.redis, user_id, settled - failed)
