"""The emulator's whole state, in memory behind one lock: mailboxes, events, tokens, shares,
subscriptions, delta states and counters.

Handlers take `store.lock` for the length of one Graph call, so every call sees and leaves a
consistent state, as a real mailbox store would. Every write to an event bumps `seq` and stamps
the event, which is what delta rounds and notifications are computed from.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from emulators.graph import events as ev
from emulators.graph import ids
from emulators.graph.errors import GraphError, not_found
from emulators.graph.timeutil import utcnow


@dataclass
class User:
    """A mailbox owner as /users shows it."""

    id: str
    upn: str
    display_name: str
    time_zone: str

    def render(self) -> dict[str, Any]:
        given, _, surname = self.display_name.partition(" ")
        return {
            "businessPhones": [],
            "displayName": self.display_name,
            "givenName": given or None,
            "jobTitle": None,
            "mail": self.upn,
            "mobilePhone": None,
            "officeLocation": None,
            "preferredLanguage": "en-US",
            "surname": surname or None,
            "userPrincipalName": self.upn,
            "id": self.id,
        }

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "userPrincipalName": self.upn,
            "mail": self.upn,
            "displayName": self.display_name,
            "timeZone": self.time_zone,
        }


@dataclass
class Settings:
    """Knobs set on the command line."""

    tenant: str
    client_id: str
    client_secret: str
    max_concurrency: int = 4
    rate_limit: int = 10_000
    rate_window: float = 600.0
    notify_retry_scale: float = 1.0
    token_lifetime: int = 3600
    latency: float = 0.0
    http_hosts: frozenset[str] = frozenset()


# A change listener gets (mailbox id, event id, change type) after the lock is released.
Listener = Callable[[str, str, str], None]


@dataclass
class Store:
    settings: Settings
    lock: threading.RLock = field(default_factory=threading.RLock)
    users: dict[str, User] = field(default_factory=dict)
    events: dict[str, dict[str, ev.Event]] = field(default_factory=dict)
    by_transaction: dict[tuple[str, str], str] = field(default_factory=dict)
    shares: dict[str, dict[str, str]] = field(default_factory=dict)  # delegate -> owner -> role
    seq: int = 0
    listeners: list[Listener] = field(default_factory=list)
    counters: dict[str, Any] = field(
        default_factory=lambda: {
            "delta_rounds": Counter(),
            "requests": Counter(),
            "batched": 0,  # inner requests of $batch calls (also counted under their routes)
            "throttled": 0,
            "notifications": {"sent": 0, "delivered": 0, "dropped": 0},
        }
    )
    # Per mailbox, wall-clock seconds of its latest change, and of the latest change whose
    # notification some endpoint answered 2xx: whoever checks "no accepted notification was
    # lost" needs to know which changes were announced and accepted (/_emulator/state).
    changed_at: dict[str, float] = field(default_factory=dict)
    announced_at: dict[str, float] = field(default_factory=dict)

    # -- users -----------------------------------------------------------------------------
    def add_user(self, mail: str, display_name: str, time_zone: str = "UTC") -> User:
        with self.lock:
            if self.find_user(mail) is not None:
                raise GraphError(
                    400, "Request_BadRequest",
                    f"Another object with the same value for property userPrincipalName "
                    f"already exists: {mail!r}.",
                )  # fmt: skip
            user = User(str(uuid.uuid4()), mail, display_name, time_zone)
            self.users[user.id] = user
            self.events[user.id] = {}
            return user

    def find_user(self, key: str) -> User | None:
        """By Graph id or userPrincipalName (case-insensitive, as Entra compares UPNs)."""
        with self.lock:
            if key in self.users:
                return self.users[key]
            lowered = key.lower()
            return next((u for u in self.users.values() if u.upn.lower() == lowered), None)

    def user_list(self) -> list[User]:
        with self.lock:
            return sorted(self.users.values(), key=lambda u: u.upn)

    def user(self, key: str) -> User:
        found = self.find_user(key)
        if found is None:
            raise GraphError(
                404, "Request_ResourceNotFound",
                f"Resource '{key}' does not exist or one of its queried reference-property "
                "objects are not present.",
            )  # fmt: skip
        return found

    def share(self, owner: str, delegate: str, role: str) -> None:
        with self.lock:
            self.user(owner)
            self.user(delegate)
            self.shares.setdefault(delegate, {})[owner] = role

    def shared_with(self, delegate: str) -> dict[str, str]:
        return self.shares.get(delegate, {})

    # -- events ----------------------------------------------------------------------------
    def _stamp(self, event: ev.Event) -> None:
        self.seq += 1
        event.changed_seq = self.seq

    def create_event(
        self, mailbox: str, body: dict[str, Any], privileged: bool = False,
        return_first: bool = False,
    ) -> tuple[ev.Event, bool]:  # fmt: skip
        """(event, created). A repeated transactionId is refused as integrators report Graph
        refusing it: 400 ErrorDuplicateTransactionId (Microsoft documents what the id is for,
        not this answer). Refused also when the first event has since been deleted: nothing
        says Graph forgets the id, so the strict answer is assumed. `return_first` (the
        `transaction_returns_first` fault) returns the first event instead, or makes a new one
        if it is gone, as the emulator used to."""
        with self.lock:
            owner = self.user(mailbox)
            tx = body.get("transactionId")
            if isinstance(tx, str) and (owner.id, tx) in self.by_transaction:
                if not return_first:
                    raise GraphError(
                        400, "ErrorDuplicateTransactionId",
                        "The TransactionId specified in the request has already been used to "
                        "create a different event.",
                    )  # fmt: skip
                existing = self.events[owner.id].get(self.by_transaction[(owner.id, tx)])
                if existing is not None:
                    return existing, False
            event = ev.new_event(
                owner.id, owner.display_name, owner.upn, body, utcnow(), privileged
            )
            self._stamp(event)
            event.created_seq = event.changed_seq
            self.events[owner.id][event.id] = event
            if event.transaction_id:
                self.by_transaction[(owner.id, event.transaction_id)] = event.id
        self._emit(owner.id, event.id, "created")
        return event, True

    def resolve(self, mailbox: str, event_id: str) -> tuple[ev.Event, date | None]:
        """The stored event and, for an occurrence id, its original date; 404 if gone."""
        stored = self.events.get(mailbox, {})
        if event_id in stored:
            return stored[event_id], None
        parsed = ids.parse_occurrence_id(event_id)
        if parsed is not None and parsed[0] in stored:
            master = stored[parsed[0]]
            if ev.occurrence(master, parsed[1]) is not None:
                return master, parsed[1]
        raise not_found()

    def instance(self, mailbox: str, event_id: str) -> ev.Instance:
        event, day = self.resolve(mailbox, event_id)
        if day is None:
            return ev.master_instance(event)
        found = ev.occurrence(event, day)
        if found is None:
            raise not_found()
        return found

    def update_event(
        self, mailbox: str, event_id: str, body: dict[str, Any], privileged: bool = False
    ) -> ev.Instance:
        with self.lock:
            event, day = self.resolve(mailbox, event_id)
            if day is None:
                ev.patch_event(event, body, utcnow(), privileged)
            else:
                ev.patch_occurrence(event, day, body, utcnow())
            self._stamp(event)
            result = self.instance(mailbox, event_id)
        self._emit(mailbox, event.id, "updated")
        return result

    def delete_event(self, mailbox: str, event_id: str) -> None:
        with self.lock:
            event, day = self.resolve(mailbox, event_id)
            if day is None:
                del self.events[mailbox][event.id]
                self.seq += 1
                change = "deleted"
            else:
                event.cancelled.add(day)
                event.exceptions.pop(day, None)
                ev.touch(event, utcnow())
                self._stamp(event)
                change = "updated"
        self._emit(mailbox, event.id, change)

    def _emit(self, mailbox: str, event_id: str, change: str) -> None:
        with self.lock:
            self.changed_at[mailbox] = time.time()
        for listener in list(self.listeners):
            listener(mailbox, event_id, change)

    # -- inspection ------------------------------------------------------------------------
    def render_event(self, event: ev.Event, base: str) -> dict[str, Any]:
        """Graph's JSON for a stored event with every extended property, for /_emulator/state."""
        out = ev.render(ev.master_instance(event), "UTC", base)
        out["singleValueExtendedProperties"] = [
            {"id": pid, "value": value} for pid, value in event.ext.values()
        ]
        return out

    def announced(self, mailbox: str, changed_at: float) -> None:
        """A notification for a change made at `changed_at` was answered 2xx."""
        with self.lock:
            self.announced_at[mailbox] = max(self.announced_at.get(mailbox, 0.0), changed_at)

    def count_request(self, route: str) -> None:
        with self.lock:
            self.counters["requests"][route] += 1
