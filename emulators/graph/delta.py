"""calendarView delta rounds, as stingy as Outlook's.

A round starts from the window's parameters (first call) or a `$deltatoken`; it lists the
instances that are new or whose event changed since the round's base, `@removed` for items that
left (not for a deleted occurrence of a surviving series; but for items changed outside the
window, as Outlook does), pages them with `$skiptoken` links by
`Prefer: odata.maxpagesize`, and ends with a `@odata.deltaLink`. Plain occurrences carry only
id, type, seriesMasterId and start/end: the client reads the master for the rest.
Tokens are kept here; an `expire_delta` fault bumps a mailbox's generation, after which its old
tokens answer 410 SyncStateNotFound, as Exchange does when it evicts a sync state.

Graph's paging as integrators report it (research/graph-reality.md item 1), each a standing
fault on one mailbox (or all), armed through `/_emulator/faults`:
- `delta_oversize`: a series is never split across pages (microsoft-graph-docs PR #4501): a page
  that lists one instance of a series lists all of the round's, however many more than
  `odata.maxpagesize` that makes (#7352, msgraph-sdk-dotnet #3070);
- `delta_repeat_link`: a page fetched by a nextLink carries that same nextLink again, and the
  link serves the same page again, forever (#3070);
- `delta_changing_links`: the round starts normally, but where it would end its last page comes
  again and again, each time under a new nextLink, and no deltaLink ever comes (#3082);
- `delta_empty_pages`: `pages` empty pages (default 1), each with a nextLink, before every page
  that carries items;
- `delta_unavailable` (counted, not standing): 503 or 504 `UnknownError` to every delta request
  of a mailbox holding at least `series` recurring series (default 1) (microsoft-graph-docs
  #6499, msgraph-sdk-dotnet #1568).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from flask import Response, current_app, jsonify, request

from emulators.graph import events as ev
from emulators.graph import ids, query
from emulators.graph.errors import GraphError
from emulators.graph.faults import Fault, Faults
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
    empties: int = 0  # `delta_empty_pages`: empty pages still to come before the next items
    again: bool = False  # `delta_repeat_link`: this link serves the same page every time


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
    _unavailable(store, mailbox)
    if "$skiptoken" in q:
        with tracker.lock:
            pending = tracker.pending.get(q["$skiptoken"])
            if pending is not None and not pending.again:
                del tracker.pending[q["$skiptoken"]]
        if pending is None or pending.next_chain.mailbox != mailbox.id:
            raise _stale()
        if pending.next_chain.generation != tracker.current_generation(mailbox.id):
            raise _stale()
        return _page(tracker, pending, q["$skiptoken"] if pending.again else None)
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
    empties = _armed("delta_empty_pages", mailbox.id)
    first = empties.params.get("pages", 1) if empties is not None else 0
    return _page(tracker, Pending(tuple(items), page_size, next_chain, empties=first))


def _faults() -> Faults:
    return current_app.extensions["graph_faults"]  # type: ignore[no-any-return]


def _armed(kind: str, mailbox: str) -> Fault | None:
    """The standing fault of this kind that applies to the mailbox, if one is armed."""
    return next(
        (f for f in _faults().standing(kind) if f.params.get("mailbox") in (None, mailbox)), None
    )


def _unavailable(store: Store, mailbox: User) -> None:
    """An armed `delta_unavailable` fault answers a mailbox heavy with recurring series."""
    with store.lock:
        series = sum(e.recurrence is not None for e in store.events.get(mailbox.id, {}).values())
    heavy = [
        f for f in _faults().standing("delta_unavailable")
        if f.params.get("mailbox") in (None, mailbox.id) and series >= f.params.get("series", 1)
    ]  # fmt: skip
    fault = _faults().take("delta_unavailable", mailbox.id) if heavy else None
    if fault is None or series < fault.params.get("series", 1):
        return
    with store.lock:
        store.counters["throttled"] += 1
    retry = fault.params.get("retry_after")
    headers = {"Retry-After": str(retry)} if retry is not None else None
    raise GraphError(fault.params.get("status", 503), "UnknownError", "", headers)


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


def _page(tracker: DeltaStates, pending: Pending, again: str | None = None) -> Response:
    """One page of a round in progress; `again` is the skiptoken of a page that repeats."""
    mailbox = pending.next_chain.mailbox
    path = request.path.replace("delta()", "delta")
    body: dict[str, Any] = {
        "@odata.context": f"{query.base_url()}/v1.0/$metadata#Collection(event)",
        "value": [],
    }
    token = again or ids.opaque_token(32)
    if pending.empties > 0 and pending.items:
        following: Pending | None = replace(pending, empties=pending.empties - 1)
    else:
        head, rest = _split(pending, _armed("delta_oversize", mailbox) is not None)
        body["value"] = head
        following = _following(pending, head, rest, mailbox, again)
    with tracker.lock:
        if following is not None:
            tracker.pending[token] = following
        else:
            tracker.chains[token] = pending.next_chain
    if following is not None:
        body["@odata.nextLink"] = query.link(path, {"$skiptoken": token})
    else:
        body["@odata.deltaLink"] = query.link(path, {"$deltatoken": token})
    response = jsonify(body)
    response.headers["Preference-Applied"] = "odata.track-changes"
    return response


def _split(
    pending: Pending, whole_series: bool
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """This page's items and the rest; with `delta_oversize` a series is never split."""
    items = list(pending.items)
    head, rest = items[: pending.page_size], items[pending.page_size :]
    if whole_series:
        series = {i["seriesMasterId"] for i in head if i.get("seriesMasterId")}
        head += [i for i in rest if i.get("seriesMasterId") in series]
        rest = [i for i in rest if i.get("seriesMasterId") not in series]
    return head, rest


def _following(
    pending: Pending, head: list[dict[str, Any]], rest: list[dict[str, Any]], mailbox: str,
    again: str | None,
) -> Pending | None:  # fmt: skip
    """What the page's nextLink serves, None when the round ends here (its deltaLink)."""
    if again is not None:
        return pending  # the same page, under the same link
    empties = _armed("delta_empty_pages", mailbox)
    pages = empties.params.get("pages", 1) if empties is not None else 0
    if _armed("delta_repeat_link", mailbox) is not None:
        return Pending(tuple(rest), pending.page_size, pending.next_chain, again=True)
    if rest:
        return Pending(tuple(rest), pending.page_size, pending.next_chain, empties=pages)
    if _armed("delta_changing_links", mailbox) is not None:
        return Pending(tuple(head), len(head) or 1, pending.next_chain)  # this page again
    return None
