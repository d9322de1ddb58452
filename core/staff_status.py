"""Each staff member's sync status, in Coconut's own vocabulary, read from what the jobs record.

The User Accounts tab and `exsync status` show the same rows. Everything comes from Redis: the
roster (every active Coconut user, written by the worker that lists staff), the staff and
mailbox hashes the jobs keep, the subscriptions, the projection index and the busy blocks. The
web process never asks Graph or Coconut.

Statuses follow Coconut's Users tab (research/coconut.md §3.6): *Syncing*, *Warnings* (missing
data on either side: events do not sync while present) and *Errors* (Exchange refused, or
another failure: no sync while present).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from enum import StrEnum

import redis

from core import store

ROSTER_KEY = store.key("roster")
ENABLED_KEY = store.key("enabled_staff")  # with manual user syncing: the staff ids enabled
NOT_ENABLED = "not enabled for syncing (manual user syncing is on)"


class State(StrEnum):
    ERROR = "error"
    WARNING = "warning"
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
    enabled: bool


def rows(conn: redis.Redis, *, polling: bool) -> list[StaffRow]:
    """Every rostered staff member, errors first, then warnings, then syncing; by name."""
    roster = {k.decode(): json.loads(v) for k, v in conn.hgetall(ROSTER_KEY).items()}
    subscriptions = _subscriptions_by_mailbox(conn)
    found = [_row(conn, sid, person, subscriptions, polling) for sid, person in roster.items()]
    order = [State.ERROR, State.WARNING, State.SYNCING, State.NOT_SYNCED]
    return sorted(found, key=lambda r: (order.index(r.state), r.name.lower()))


def counts(found: list[StaffRow]) -> dict[State, int]:
    return {state: sum(r.state == state for r in found) for state in State}


def _row(
    conn: redis.Redis, staff_id: str, person: dict[str, object],
    subscriptions: dict[str, tuple[str, int]], polling: bool,
) -> StaffRow:  # fmt: skip
    staff = _hash(conn, store.key("staff", staff_id))
    user_id = staff.get("user_id", "")
    mailbox = _hash(conn, store.mailbox_key(user_id)) if user_id else {}
    error = staff.get("error") or mailbox.get("error") or ""
    warning = staff.get("warning") or mailbox.get("warning") or ""
    held = int(mailbox.get("held_removals") or 0)
    if not person.get("takes_appointments"):
        state, problem = State.NOT_SYNCED, "does not take appointments in Coconut"
    elif error:
        state, problem = State.ERROR, error
    elif warning or not user_id:
        state = State.WARNING
        problem = warning or f"no Exchange mailbox matches {person.get('email')}"
    else:
        state, problem = State.SYNCING, ""
    if held:
        problem = (problem + "; " if problem else "") + f"{held} removal(s) held for review"
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
        to_exchange=conn.hlen(store.key("projected", user_id)) if user_id else 0,
        to_coconut=conn.hlen(store.block_key(user_id)) if user_id else 0,
        held_removals=held,
        enabled=bool(conn.sismember(ENABLED_KEY, staff_id)),
    )


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
