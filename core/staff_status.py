"""Each staff member's sync status, in Coconut's own vocabulary, read from what the jobs record.

The User Accounts tab and `exsync status` show the same rows. Everything comes from Redis: the
roster (every active Coconut user, written by the worker that lists staff), the staff and
mailbox hashes the jobs keep, the subscriptions, the projection index and the busy blocks. The
web process never asks Graph or Coconut.

Statuses follow Coconut's Users tab (research/coconut.md §3.6): *Syncing*, *Warnings* (missing
data on either side: events do not sync while present; or items Coconut refused, core.refusals)
and *Errors* (Exchange refused, or another failure: no sync while present). While the connection
does not sync (core.connection_state: disconnected, not authorized, ...) no row says *Syncing*:
a staff member who would be is *Not connected*, with the reason (errors and warnings stay).

Each row also says when the mailbox's last full reconciliation finished and what it repaired,
or that one is requested or running (core.reconcile).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

import redis

from core import connection_state, reconcile, refusals, store
from core.connection_state import ConnectionState
from core.settings import Settings

ROSTER_KEY = store.roster_key()
ENABLED_KEY = store.enabled_staff_key()  # with manual user syncing: the staff ids enabled
NOT_ENABLED = "not enabled for syncing (manual user syncing is on)"


class State(StrEnum):
    ERROR = "error"
    WARNING = "warning"
    NOT_CONNECTED = "not_connected"  # the connection does not sync: nothing moves
    SYNCING = "syncing"
    NOT_SYNCED = "not_synced"  # does not take appointments: nothing to sync


@dataclass(frozen=True)
class StaffRow:
    staff_id: str
    name: str
    email: str
    mailbox: str  # the matched address, '' when none
    user_id: str  # the Graph user id, '' when none
    state: State
    problem: str  # the error or warning in plain words, '' when none
    subscription: str  # "live until …", "polling", "none"
    subscription_expires_at: int
    last_notification_at: int
    last_sync_at: int
    to_exchange: int  # our events in the mailbox
    to_coconut: int  # busy blocks written from the mailbox
    held_removals: int
    enabled: bool  # synced: manual user syncing is off, or the admin enabled them
    refused: tuple[RefusedItem, ...]  # items Coconut refused, until a later attempt succeeds
    reconciled_at: int  # when the last full reconciliation finished, 0 never
    repaired: str  # what it repaired, in plain words ('' never)
    reconcile: str  # "running", "requested" or ''

    @property
    def reconciliation(self) -> str:
        """The last full reconciliation and the one under way, in plain words."""
        last = f"finished {when(self.reconciled_at)}: {self.repaired}" if self.reconciled_at else ""
        if self.reconcile:
            return f"full reconciliation {self.reconcile}" + (f" (last {last})" if last else "")
        return f"last full reconciliation {last}" if last else ""


@dataclass(frozen=True)
class RefusedItem:
    text: str  # which item and why, in plain words
    status: int
    attempts: int
    since: int
    retry_at: int


ORDER = [State.ERROR, State.WARNING, State.NOT_CONNECTED, State.SYNCING, State.NOT_SYNCED]


def current(conn: redis.Redis, settings: Settings) -> tuple[ConnectionState, list[StaffRow]]:
    """The connection and every row, as the User Accounts tab, the admin API and `exsync
    status` all show them: one reading, so no two screens disagree."""
    link = connection_state.current(conn, settings)
    paused = "" if link.syncing else f"{link.headline}: nothing syncs"
    found = rows(conn, polling=link.polling, paused=paused, manual=settings.manual_user_sync)
    return link, found


def when(epoch: float) -> str:
    """An instant in plain words: "—" for never, else UTC to the minute."""
    if not epoch:
        return "—"
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M UTC")


def rows(
    conn: redis.Redis, *, polling: bool, paused: str = "", manual: bool = False
) -> list[StaffRow]:
    """Every rostered staff member, errors first, then warnings, then syncing; by name.

    `paused` is why nothing syncs ('' when the connection syncs: core.connection_state);
    `manual` is EXSYNC_MANUAL_USER_SYNC (only staff an admin enabled are synced)."""
    roster = {k.decode(): json.loads(v) for k, v in conn.hgetall(ROSTER_KEY).items()}
    subscriptions = _subscriptions_by_mailbox(conn)
    found = [
        _row(conn, sid, person, subscriptions, polling, paused, manual)
        for sid, person in roster.items()
    ]
    return sorted(found, key=lambda r: (ORDER.index(r.state), r.name.lower()))


def counts(found: list[StaffRow]) -> dict[State, int]:
    return {state: sum(r.state == state for r in found) for state in State}


def _row(
    conn: redis.Redis, staff_id: str, person: dict[str, object],
    subscriptions: dict[str, tuple[str, int]], polling: bool, paused: str, manual: bool,
) -> StaffRow:  # fmt: skip
    staff = _hash(conn, store.staff_key(staff_id))
    user_id = staff.get("user_id", "")
    mailbox = _hash(conn, store.mailbox_key(user_id)) if user_id else {}
    error = staff.get("error") or mailbox.get("error") or ""
    warning = staff.get("warning") or mailbox.get("warning") or ""
    held = int(mailbox.get("held_removals") or 0)
    refused = tuple(_refused(r) for r in refusals.refused(conn, user_id)) if user_id else ()
    takes_appointments = bool(person.get("takes_appointments"))
    if not takes_appointments:
        state, problem = State.NOT_SYNCED, "does not take appointments in Coconut"
    elif error:
        state, problem = State.ERROR, error
    elif warning or not user_id:
        state = State.WARNING
        problem = warning or f"no Exchange mailbox matches {person.get('email')}"
    elif refused:
        state, problem = State.WARNING, ""
    elif paused:  # nothing is wrong with this staff member, but nothing moves
        state, problem = State.NOT_CONNECTED, paused
    else:
        state, problem = State.SYNCING, ""
    if refused and takes_appointments:
        problem = (problem + "; " if problem else "") + f"Coconut refused {len(refused)} item(s)"
    if held:
        problem = (problem + "; " if problem else "") + f"{held} removal(s) held for review"
    last = reconcile.last(conn, user_id) if user_id else None
    sub_id, expires = subscriptions.get(user_id, ("", 0))
    if polling and user_id:
        subscription = "polling"
    elif sub_id and expires > time.time():
        subscription = "live"
    elif user_id:
        subscription = "none"
    else:
        subscription = ""
    return StaffRow(
        staff_id=staff_id,
        name=str(person.get("name") or ""),
        email=str(person.get("email") or ""),
        mailbox=staff.get("address", "") if user_id else "",
        user_id=user_id,
        state=state,
        problem=problem,
        subscription=subscription,
        subscription_expires_at=expires,
        last_notification_at=int(float(mailbox.get("last_notification_at") or 0)),
        last_sync_at=int(float(mailbox.get("last_sync_at") or 0)),
        to_exchange=conn.hlen(store.projected_key(user_id)) if user_id else 0,
        to_coconut=conn.hlen(store.block_key(user_id)) if user_id else 0,
        held_removals=held,
        enabled=takes_appointments and (not manual or bool(conn.sismember(ENABLED_KEY, staff_id))),
        refused=refused,
        reconciled_at=int(last.at) if last else 0,
        repaired=last.repaired.text if last and last.at else "",
        reconcile=_reconcile_state(conn, user_id, last),
    )


def _refused(refusal: refusals.Refusal) -> RefusedItem:
    return RefusedItem(
        text=refusal.text, status=refusal.status, attempts=refusal.attempts,
        since=int(refusal.since), retry_at=int(refusal.retry_at),
    )  # fmt: skip


def _reconcile_state(conn: redis.Redis, user_id: str, last: reconcile.Reconciled | None) -> str:
    """A full reconciliation asked for is running once a round of the mailbox holds its lock
    (that round, or the one it queues, reads the mailbox whole)."""
    if last is None or not last.requested_at:
        return ""
    return "running" if conn.exists(store.lock_key("mailbox", user_id)) else "requested"


def _hash(conn: redis.Redis, key: str) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in conn.hgetall(key).items()}


def _subscriptions_by_mailbox(conn: redis.Redis) -> dict[str, tuple[str, int]]:
    found: dict[str, tuple[str, int]] = {}
    prefix = store.subscription_key("")
    for key in conn.scan_iter(match=prefix + "*", count=500):
        record = _hash(conn, key.decode())
        if "user_id" in record:
            expires = int(store.epoch(record["expires_at"])) if record.get("expires_at") else 0
            found[record["user_id"]] = (key.decode()[len(prefix) :], expires)
    return found
