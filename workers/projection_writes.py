"""Carrying out a projection plan (workers.projection_plan) in one mailbox: one executor, the
writes sent one at a time (an item's own job) or in `$batch` calls of 20 (a bulk round).

What it records is the same either way: a create is recorded as pending before it is sent (a
worker that dies before the answer leaves a record saying where our mark must be looked for),
every changeKey we write is stored as soon as its answer arrives (so the mailbox's delta round
knows its own writes), a patch answered 404 earns a create with the next generation, and a
request Graph refuses inside a `$batch` is handed to the item's own job, which retries it
without holding up the rest. Outside a batch, a refusal raises and the job is retried.

One refusal is no failure: a create answered 400 ErrorDuplicateTransactionId was carried out
before (its answer lost to a 5xx or a timeout, and sent again with the same transactionId).
On either path the event is looked up by our mark and planned as one the mailbox shows
(workers.projection_plan: adopted, extra copies dropped, brought to the draft by an update);
if no event carries our mark any more (deleted meanwhile), the create is made again with the
next generation's transactionId.
"""

from __future__ import annotations

import logging

from kiota_abstractions.request_information import RequestInformation

from core import audit, jobs
from core.connection import EditPolicy
from core.job_kinds import PROJECTION_JOBS
from core.sync_records import Projection
from workers import exchange, mailbox_problems
from workers.context import WorkerContext
from workers.marks import mark_value, transaction_id
from workers.projection_index import ProjectionIndex
from workers.projection_plan import Action, Write, plan

log = logging.getLogger(__name__)

NO_REQUEST = frozenset({Action.ADOPT, Action.FORGET})
# A create refused as a repeated transactionId with no event of ours to adopt moves on to the
# next generation's transactionId; past this many, Graph is taken at its word: a refusal.
SKIPPED_GENERATIONS = 20


def carry_out(ctx: WorkerContext, mailbox: str, writes: list[Write], *, batch: bool) -> int:
    """Make the writes in the mailbox; returns how many of them went through."""
    index = ProjectionIndex(ctx.redis)
    done = 0
    while writes:  # the plan, then the follow-ups its answers call for, round by round
        for write in writes:
            if write.action in NO_REQUEST:
                _record_mapping(index, mailbox, write, writes)
        pending = [w for w in writes if w.action not in NO_REQUEST]
        follow_ups: list[Write] = []
        size = exchange.BATCH_LIMIT if batch else 1
        for start in range(0, len(pending), size):
            chunk = pending[start : start + size]
            _record_pending(index, mailbox, chunk)
            answers = _send(ctx, mailbox, chunk, batch)
            for write, answer in zip(chunk, answers, strict=True):
                follow_ups += _record(ctx, index, mailbox, write, answer, batch=batch)
                done += answer.ok
        writes = follow_ups
    if done:
        mailbox_problems.clear(ctx, mailbox)
    return done


def _record_mapping(index: ProjectionIndex, mailbox: str, write: Write, plan: list[Write]) -> None:
    item = write.item
    if write.action is Action.FORGET:
        assert write.base is not None
        index.remove(write.base)
        return
    assert write.record is not None
    index.save(write.record, replaces=write.base)
    drops = sum(w.action is Action.DROP and w.item.key == item.key for w in plan)
    log.info("projection.adopted", extra={"kind": item.kind, "item": item.item_id,
                                          "mailbox": mailbox})  # fmt: skip
    audit.emit(
        "projection.adopted", kind=item.kind, item_id=item.item_id, mailbox=mailbox,
        event_id=write.event_id, duplicates_removed=drops,
    )  # fmt: skip


def _record_pending(index: ProjectionIndex, mailbox: str, chunk: list[Write]) -> None:
    for write in chunk:
        if write.action is Action.CREATE:
            item = write.item
            pending = Projection(item.kind, item.item_id, mailbox, "", "", write.generation)
            index.save(pending, replaces=write.base)


def _send(
    ctx: WorkerContext, mailbox: str, chunk: list[Write], batch: bool
) -> list[exchange.Answer]:
    if batch:
        requests = {str(n): _request(ctx, mailbox, w) for n, w in enumerate(chunk)}
        answers = exchange.send_batch(ctx, mailbox, requests)
        return [answers[str(n)] for n in range(len(chunk))]
    return [_send_one(ctx, mailbox, write) for write in chunk]


def _send_one(ctx: WorkerContext, mailbox: str, write: Write) -> exchange.Answer:
    """One request on its own; Graph's refusals other than a 404 raise (the job retries)."""
    item = write.item
    if write.action is Action.CREATE:
        assert item.draft is not None
        mark, tx = _mark_and_transaction(ctx, mailbox, write)
        try:
            return _answer(exchange.create(ctx, mailbox, item.draft, mark, tx), 201)
        except exchange.DuplicateTransaction:
            return exchange.Answer.duplicate()  # the same rule as inside a batch (_record)
    if write.action is Action.UPDATE:
        assert item.draft is not None
        return _answer(exchange.update(ctx, mailbox, write.event_id, item.draft), 200)
    exchange.delete(ctx, mailbox, write.event_id)  # a 404 is what we wanted
    return exchange.Answer(204, {})


def _answer(written: exchange.Written | None, status: int) -> exchange.Answer:
    if written is None:
        return exchange.Answer(404, {})
    return exchange.Answer(status, {"id": written.event_id, "changeKey": written.change_key})


def _request(ctx: WorkerContext, mailbox: str, write: Write) -> RequestInformation:
    item = write.item
    if write.action is Action.CREATE:
        assert item.draft is not None
        mark, tx = _mark_and_transaction(ctx, mailbox, write)
        return exchange.create_request(ctx, mailbox, item.draft, mark, tx)
    if write.action is Action.UPDATE:
        assert item.draft is not None
        return exchange.update_request(ctx, mailbox, write.event_id, item.draft)
    return exchange.delete_request(ctx, mailbox, write.event_id)


def _mark_and_transaction(ctx: WorkerContext, mailbox: str, write: Write) -> tuple[str, str]:
    deployment, item = ctx.settings.deployment_id, write.item
    return (
        mark_value(deployment, item.kind, item.item_id),
        transaction_id(deployment, item.kind, item.item_id, mailbox, write.generation),
    )


def _record(
    ctx: WorkerContext, index: ProjectionIndex, mailbox: str, write: Write,
    answer: exchange.Answer, *, batch: bool,
) -> list[Write]:  # fmt: skip
    """Remember what a write did; the follow-up writes it needs, if any."""
    item = write.item
    if write.action in (Action.REMOVE, Action.DROP):
        if answer.ok or answer.status == 404:  # gone already is what we wanted
            if write.action is Action.REMOVE:
                _removed(index, mailbox, write)
            return []
    elif answer.ok:
        _written(index, mailbox, write, answer.written())
        return []
    elif write.action is Action.UPDATE and answer.status == 404 and write.base is not None:
        log.info("projection.recreated", extra={"kind": item.kind, "item": item.item_id,
                                                "mailbox": mailbox})  # fmt: skip
        return [Write(item, Action.CREATE, base=write.base, generation=write.base.generation + 1)]
    elif write.action is Action.CREATE and answer.duplicate_transaction:
        follow_ups = _made_before(ctx, mailbox, write)
        if follow_ups is not None:
            return follow_ups
    if not batch:  # the item's own job: it fails and RQ retries it (no hand-off to itself)
        raise RuntimeError(
            f"Graph refused a {write.action.value} in {mailbox}: {answer.status} "
            f"{answer.error_code}"
        )
    # Graph refused this one request: its own job retries it and, if it keeps failing, lists it
    # in the failed registry under its own name, without holding up the staff member's others.
    log.warning("bulk.refused", extra={"kind": item.kind, "item": item.item_id,
                                       "mailbox": mailbox, "status": answer.status})  # fmt: skip
    jobs.ensure_queued(ctx.queue, PROJECTION_JOBS[item.kind], item.item_id)
    return []


def _made_before(ctx: WorkerContext, mailbox: str, write: Write) -> list[Write] | None:
    """A create Graph refused as a repeated transactionId: it went through before. Our events
    for the item, found by our mark, are planned as the mailbox shows them, with the pending
    record this create left as what we know: the one event adopted, any copy dropped, and an
    update to the draft. None found (deleted since): the next generation's create. None when
    too many generations in a row were refused so (a refusal, then)."""
    item = write.item
    mark = mark_value(ctx.settings.deployment_id, item.kind, item.item_id)
    found = exchange.find_marked(ctx, mailbox, mark)
    log.info("projection.made_before", extra={"kind": item.kind, "item": item.item_id,
                                              "mailbox": mailbox, "found": len(found)})  # fmt: skip
    if found:
        pending = Projection(item.kind, item.item_id, mailbox, "", "", write.generation)
        keep_edits = ctx.options.edit_policy == EditPolicy.KEEP
        return plan(mailbox, item, pending, found, keep_edits)
    first = write.base.generation if write.base is not None else 0
    if write.generation - first >= SKIPPED_GENERATIONS:
        return None
    return [Write(item, Action.CREATE, base=write.base, generation=write.generation + 1)]


def _removed(index: ProjectionIndex, mailbox: str, write: Write) -> None:
    item = write.item
    if write.base is not None:
        index.remove(write.base)
    audit.emit(
        f"{item.kind}.removed", kind=item.kind, item_id=item.item_id, mailbox=mailbox,
        event_id=write.event_id,
    )  # fmt: skip


def _written(index: ProjectionIndex, mailbox: str, write: Write, written: exchange.Written) -> None:
    """`appointment.projected|updated`, `absence.projected|updated`, or, for a staff member's
    edit or deletion put back (we wrote this very draft before), `projection.restored`."""
    item, base = write.item, write.base
    assert item.draft is not None
    index.save(
        Projection(item.kind, item.item_id, mailbox, written.event_id, written.change_key,
                   write.generation, item.draft.digest),
        replaces=base,
    )  # fmt: skip
    if base is not None and base.digest == item.draft.digest:
        key = "projection.restored"
    else:
        key = f"{item.kind}.{'projected' if write.action is Action.CREATE else 'updated'}"
    audit.emit(key, kind=item.kind, item_id=item.item_id, mailbox=mailbox,
               event_id=written.event_id)  # fmt: skip
