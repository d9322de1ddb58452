"""calendarView delta rounds, as stingy as Outlook's.

A round starts from the window's parameters (first call) or a `$deltatoken`; it lists the
instances that are new or whose event changed since the round's base, `@removed` for items that
left (not for a deleted occurrence of a surviving series; but for items changed outside the
window, as Outlook does), pages them with `$skiptoken` links by
`Prefer: odata.maxpagesize`, and ends with a `@odata.deltaLink`. Plain occurrences carry only
id, type, seriesMasterId and start/end: the client reads the master for the rest.
Tokens are kept here; an `expire_delta` fault bumps a mailbox's generation, after which its old
tokens answer 410 SyncStateNotFound, as Exchange does when it evicts a sync state.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from flask import Response, current_app, jsonify, request

from emulators.graph import events as ev
from emulators.graph import ids, query
from emulators.graph.errors import GraphError
from emulators.graph.store import Store, User

DEFAULT_PAGE = 10
MAX_PAGE = 1000


@dataclass(frozen=True)
class Chain:
    """Where a delta chain stands: its window, base sequence and the ids the client has."""

    mailbox: str
    start: datetime
    end: datetime
    since: int
    known: frozenset[str]
    generation: int


@dataclass(frozen=True)
class Pending:
    """The rest of a round: pages still to hand out, then the chain for its deltaLink."""

    items: tuple[dict[str, Any], ...]
    page_size: int
    next_chain: Chain


class DeltaStates:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.chains: dict[str, Chain] = {}
        self.pending: dict[str, Pending] = {}
        self.generation: dict[str, int] = {}

    def expire(self, mailboxes: list[str]) -> None:
        """Old tokens of these mailboxes answer 410 from now on."""
        with self.lock:
            for mailbox in mailboxes:
                self.generation[mailbox] = self.generation.get(mailbox, 0) + 1

    def current_generation(self, mailbox: str) -> int:
        with self.lock:
            return self.generation.get(mailbox, 0)


def states() -> DeltaStates:
    return current_app.extensions["graph_delta"]  # type: ignore[no-any-return]


def _stale() -> GraphError:
    return GraphError(
        410, "SyncStateNotFound",
        "The sync state generation is not found; resync required.",
    )  # fmt: skip


def answer(store: Store, mailbox: User) -> Response:
    """One delta request: a page of a round in progress, or the first page of a new round."""
    q = query.args({"startdatetime", "enddatetime", "$deltatoken", "$skiptoken"})
    tracker = states()
    prefs = query.prefer()
    page_size = query.integer(
        {"size": prefs["odata.maxpagesize"]} if "odata.maxpagesize" in prefs else {},
        "size", DEFAULT_PAGE, 1, MAX_PAGE,
    )  # fmt: skip
    if "$skiptoken" in q:
        with tracker.lock:
            pending = tracker.pending.pop(q["$skiptoken"], None)
        if pending is None or pending.next_chain.mailbox != mailbox.id:
            raise _stale()
        if pending.next_chain.generation != tracker.current_generation(mailbox.id):
            raise _stale()
        return _page(tracker, pending)
    if "$deltatoken" in q:
        with tracker.lock:
            chain = tracker.chains.get(q["$deltatoken"])
        if chain is None or chain.mailbox != mailbox.id:
            raise _stale()
        if chain.generation != tracker.current_generation(mailbox.id):
            raise _stale()
    else:
        start, end = query.window(q)
        generation = tracker.current_generation(mailbox.id)
        chain = Chain(mailbox.id, start, end, -1, frozenset(), generation)
    with store.lock:
        store.counters["delta_rounds"][mailbox.id] += 1
        items, next_chain = _round(store, chain, query.time_zone())
    return _page(tracker, Pending(tuple(items), page_size, next_chain))


def _round(store: Store, chain: Chain, tz: str) -> tuple[list[dict[str, Any]], Chain]:
    stored = store.events.get(chain.mailbox, {})
    current: dict[str, ev.Instance] = {}
    for event in stored.values():
        for inst in ev.instances(event, chain.start, chain.end):
            current[inst.id] = inst
    base = query.base_url()
    items = []
    for inst in sorted(current.values(), key=lambda i: (i.start, i.id)):
        if inst.id not in chain.known or inst.event.changed_seq > chain.since:
            items.append(ev.render(inst, tz, base, stingy=True))
    for gone in sorted(chain.known - set(current)):
        parsed = ids.parse_occurrence_id(gone)
        master = stored.get(parsed[0]) if parsed is not None else None
        if master is not None and master.recurrence is not None:
            continue  # Outlook sends nothing for an occurrence deleted from a live series
        items.append({"@odata.type": "#microsoft.graph.event", "id": gone,
                      "@removed": {"reason": "deleted"}})  # fmt: skip
    if chain.since >= 0:
        # Outlook reports items changed outside the window as deleted; clients must cope.
        shown = {inst.event.id for inst in current.values()}
        for event in stored.values():
            if event.changed_seq > chain.since and event.id not in shown | chain.known:
                items.append({"@odata.type": "#microsoft.graph.event", "id": event.id,
                              "@removed": {"reason": "deleted"}})  # fmt: skip
    next_chain = Chain(chain.mailbox, chain.start, chain.end, store.seq, frozenset(current),
                       chain.generation)  # fmt: skip
    return items, next_chain


def _page(tracker: DeltaStates, pending: Pending) -> Response:
    items = list(pending.items)
    head, rest = items[: pending.page_size], items[pending.page_size :]
    path = request.path.replace("delta()", "delta")
    body: dict[str, Any] = {
        "@odata.context": f"{query.base_url()}/v1.0/$metadata#Collection(event)",
        "value": head,
    }
    token = ids.opaque_token(32)
    with tracker.lock:
        if rest:
            tracker.pending[token] = Pending(tuple(rest), pending.page_size, pending.next_chain)
        else:
            tracker.chains[token] = pending.next_chain
    if rest:
        body["@odata.nextLink"] = query.link(path, {"$skiptoken": token})
    else:
        body["@odata.deltaLink"] = query.link(path, {"$deltatoken": token})
    response = jsonify(body)
    response.headers["Preference-Applied"] = "odata.track-changes"
    return response
