"""Asking for a full reconciliation, and what the last one repaired (DESIGN.md, "The cursor is
an optimisation; the calendars are the truth").

A full reconciliation of one staff member reads both calendars whole instead of trusting a
cursor: their mailbox's sync window fresh from Exchange against every busy block Coconut holds
for them (workers.mailbox_sync, a full round), and every appointment and Coconut absence of theirs
against our marked events in the mailbox (workers.staff_projection.project_staff). Asking only
records the request on the mailbox hash and queues the two coalesced jobs, so the web app, the
CLI and the scheduler can all ask without calling Graph or Coconut:

    exsync:mailbox:{user_id}   full_requested  when the oldest unanswered request was made
                               full_reason     why (resync, authorize, schedule, settings, ...)
                               reconciled_at   when the last full round finished
                               repaired        JSON: what it made, fixed and removed

A request made while a full round runs is answered by one more full round (the round clears
`full_requested` only if it is still the value it began with).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import redis
from rq import Queue

from core import jobs, store
from core.job_kinds import JobKind

if TYPE_CHECKING:  # staff_status reads what this module records
    from core.staff_status import StaffRow

REQUESTED = "full_requested"


@dataclass(frozen=True)
class Repaired:
    """What one full reconciliation of a mailbox changed in Coconut (busy blocks)."""

    made: int = 0
    fixed: int = 0
    removed: int = 0

    @property
    def total(self) -> int:
        return self.made + self.fixed + self.removed

    @property
    def text(self) -> str:
        if not self.total:
            return "nothing to repair"
        parts = [(self.made, "made"), (self.fixed, "fixed"), (self.removed, "removed")]
        return ", ".join(f"{n} busy block(s) {what}" for n, what in parts if n)


@dataclass(frozen=True)
class Reconciled:
    at: float  # 0 when the mailbox was never fully reconciled
    repaired: Repaired
    requested_at: float  # 0 when no request is outstanding
    reason: str


def request(queue: Queue, staff_id: str, user_id: str, reason: str) -> list[str]:
    """Ask for a full reconciliation of one staff member; returns the job ids to watch."""
    queued = [jobs.ensure_queued(queue, JobKind.PROJECT_STAFF, staff_id)]
    if user_id:
        mark(queue.connection, user_id, reason)
        queued.append(jobs.ensure_queued(queue, JobKind.SYNC_MAILBOX, user_id))
    return queued


def resync(queue: Queue, rows: list[StaffRow]) -> list[str]:
    """Resync staff members (User Accounts' Resync and Recheck, `exsync resync`): `sync_staff`
    re-matches each one's mailbox and queues one job per appointment and absence of theirs,
    then the full reconciliation above. Returns the job ids to watch."""
    queued = []
    for row in rows:
        queued.append(jobs.ensure_queued(queue, JobKind.SYNC_STAFF, row.staff_id))
        queued += request(queue, row.staff_id, row.user_id, "resync")
    return queued


def mark(conn: redis.Redis, user_id: str, reason: str) -> None:
    """Record the request; the mailbox's next round is a full one."""
    pipe = conn.pipeline()
    pipe.hsetnx(store.mailbox_key(user_id), REQUESTED, time.time())
    pipe.hset(store.mailbox_key(user_id), "full_reason", reason)
    pipe.execute()


def request_all(queue: Queue, reason: str) -> int:
    """Every matched staff mailbox: after a setting that changes the rules is saved."""
    matched = covered(queue.connection)
    for user_id, staff_id in matched.items():
        request(queue, staff_id, user_id, reason)
    return len(matched)


def covered(conn: redis.Redis) -> dict[str, str]:
    """Mailbox user id -> staff id, for every mailbox the directory matched to a staff member."""
    prefix = store.mailbox_key("")
    found: dict[str, str] = {}
    for key in conn.scan_iter(match=prefix + "*", count=500):
        staff_id = conn.hget(key, "staff_id")
        if staff_id:
            found[key.decode()[len(prefix) :]] = staff_id.decode()
    return found


def forget_cursor(conn: redis.Redis, user_id: str) -> None:
    """The mailbox's delta cursor describes a mailbox, a sign-in and a window that no longer
    hold (Disconnect, another tenant, app or account, a re-match): its next round is full."""
    conn.hdel(store.mailbox_key(user_id), "delta_link", "window", "window_start", "cursor_at")


def forget_cursors(conn: redis.Redis) -> int:
    """Every mailbox's cursor, matched or not; returns how many mailboxes were known."""
    prefix = store.mailbox_key("")
    keys = [key.decode() for key in conn.scan_iter(match=prefix + "*", count=500)]
    for key in keys:
        forget_cursor(conn, key[len(prefix) :])
    return len(keys)


def last(conn: redis.Redis, user_id: str) -> Reconciled:
    fields = conn.hmget(
        store.mailbox_key(user_id), "reconciled_at", "repaired", REQUESTED, "full_reason"
    )
    at, repaired, requested, reason = (v.decode() if v else "" for v in fields)
    return Reconciled(
        at=float(at or 0),
        repaired=Repaired(**json.loads(repaired)) if repaired else Repaired(),
        requested_at=float(requested or 0),
        reason=reason,
    )
