"""Microsoft Graph change and lifecycle notifications.

`POST /webhooks/graph`: the validation handshake, then for each notification item: the
subscription must be ours, its `clientState` must match (constant time) and its tenant must be
ours; each valid item marks its mailbox dirty and makes sure one `sync_mailbox` job is queued.
Graph counts only a 2xx within 3 seconds as delivered and drops notifications to slow
endpoints, so the answer never waits on anything but Redis.

`POST /webhooks/graph/lifecycle`: `reauthorizationRequired`, `subscriptionRemoved` and `missed`
go to the subscription manager's jobs.

Both receivers cost one Redis round trip to check a batch, however many items it holds: the
records of its distinct subscriptions are read together, fresh on every request (a deleted
subscription is refused at once). A batch of more than MAX_ITEMS is refused whole (413) before
Redis is asked anything. The items refused make one log line per batch, counts per reason.

A batch in which no item is ours gets a 4xx naming why (403 when every item failed a
subscription or clientState check, 400 when none was even well formed) and queues nothing:
Graph itself only ever sends items of live subscriptions with the clientState we gave them.
"""

from __future__ import annotations

import hmac
import json
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import redis
from flask import Blueprint, Response, abort, current_app, jsonify, make_response, request

from core import jobs, store
from core.job_kinds import JobKind
from core.metrics import NOTIFICATIONS
from webhooks import echoes

log = logging.getLogger(__name__)
T = TypeVar("T")
bp = Blueprint("graph_webhooks", __name__)

LIFECYCLE_JOBS = {
    "reauthorizationRequired": JobKind.REAUTHORIZE_SUBSCRIPTION,
    "subscriptionRemoved": JobKind.RECREATE_SUBSCRIPTION,
    "missed": None,  # nothing to repair on the subscription: resync the mailbox
}
MAX_TOKEN_LENGTH = 4096
# Graph puts the notifications of a moment in one POST, a few hundred at the most, while the
# 1 MB body we accept holds 37,000 bare items (issue 19). 1,000 leaves Graph's bursts room and
# bounds the one lookup a batch costs.
MAX_ITEMS = 1_000
TOO_MANY = "too many items"


class InvalidItem(Exception):
    """One notification item is not ours; it is dropped, the rest of the batch still counts.
    `malformed`: it is not even shaped like one of Graph's."""

    def __init__(self, reason: str, *, malformed: bool = False) -> None:
        super().__init__(reason)
        self.malformed = malformed


@dataclass(frozen=True)
class Known:
    """What a batch's items are checked against: our records of the subscriptions it names
    (empty for an id we do not know) and our tenant."""

    records: dict[str, dict[bytes, bytes]]
    tenant: str


@dataclass(frozen=True)
class Received(Generic[T]):
    services: Any
    items: int  # how many the batch held
    verified: list[T]


@bp.post("/webhooks/graph")
def notifications() -> tuple[Response, int] | Response:
    got = _receive(_verified_notification, refused_as="graph.item_refused", counted=True)
    services, verified = got.services, got.verified
    mailboxes = _news(services.redis, verified)
    # Graph batches several changes per POST; one job per mailbox covers them all, and the
    # flag counts them (the job waits out a burst: core.jobs.run_coalesced).
    for mailbox, changes in sorted(mailboxes.items()):
        jobs.ensure_queued(services.queue, JobKind.SYNC_MAILBOX, mailbox, changes=changes)
    news = sum(mailboxes.values())
    NOTIFICATIONS.labels(source="graph", outcome="accepted").inc(news)
    if echoed := len(verified) - news:
        NOTIFICATIONS.labels(source="graph", outcome="echo").inc(echoed)
    # DEBUG: one line per POST at thousands a second would drown the log (the access log has them).
    log.debug("graph.notifications", extra={"items": got.items, "mailboxes": len(mailboxes)})
    return jsonify(status="accepted", mailboxes=len(mailboxes)), 202


@bp.post("/webhooks/graph/lifecycle")
def lifecycle() -> tuple[Response, int] | Response:
    got = _receive(_verified_lifecycle, refused_as="graph.lifecycle_refused", counted=False)
    queued = 0
    for event, subscription_id, mailbox in got.verified:
        func = LIFECYCLE_JOBS[event]
        if func is not None:
            jobs.ensure_queued(got.services.queue, func, subscription_id)
        jobs.ensure_queued(got.services.queue, JobKind.SYNC_MAILBOX, mailbox)
        log.info("graph.lifecycle", extra={"lifecycle_event": event, "mailbox": mailbox})
        queued += 1
    return jsonify(status="accepted", queued=queued), 202


def _receive(
    verify: Callable[[Known, dict[str, Any]], T], *, refused_as: str, counted: bool
) -> Received[T]:
    """The batch's verified items; else the request ends with the validation handshake, or a
    4xx for a body we cannot read, a batch too large or one with no item of ours. The items
    refused are summed up under `refused_as`, and with `counted` in the notifications metric."""
    handshake = _handshake()
    if handshake is not None:
        abort(handshake)
    items = _items()
    if isinstance(items, tuple):
        abort(make_response(*items))
    if len(items) > MAX_ITEMS:
        _report(Counter({TOO_MANY: len(items)}), refused_as, counted=counted)
        abort(make_response(*_too_many(len(items))))
    services = current_app.extensions["exsync"]
    verified, refused = _checked(verify, _known(services, items), items)
    if refused:
        _report(Counter(str(exc) for exc in refused), refused_as, counted=counted)
    if not verified:
        abort(make_response(*_refusal(refused)))
    return Received(services, len(items), verified)


def _checked(
    verify: Callable[[Known, dict[str, Any]], T], known: Known, items: list[dict[str, Any]]
) -> tuple[list[T], list[InvalidItem]]:
    """The items that passed `verify`, and why each other one did not."""
    verified: list[T] = []
    refused: list[InvalidItem] = []
    for item in items:
        try:
            verified.append(verify(known, item))
        except InvalidItem as exc:
            refused.append(exc)
    return verified, refused


def _report(refused: Counter[str], event: str, *, counted: bool) -> None:
    """One log line and one metric step per reason for a batch, however many items it
    refused: per item, one bogus POST would write thousands of each."""
    if counted:
        for reason, count in refused.items():
            NOTIFICATIONS.labels(source="graph", outcome=reason).inc(count)
    log.info(event, extra={"refused": dict(sorted(refused.items()))})


def _too_many(items: int) -> tuple[Response, int]:
    reason = f"{items} notifications in one POST, more than the {MAX_ITEMS} accepted"
    return jsonify(error="Request Entity Too Large", reason=reason), 413


def _refusal(refused: list[InvalidItem]) -> tuple[Response, int]:
    """No item of the batch was ours: 400 if none was well formed, else 403, with the reasons."""
    reasons = sorted({str(exc) for exc in refused}) or ["value is empty"]
    malformed = all(exc.malformed for exc in refused)
    status, error = (400, "Bad Request") if malformed else (403, "Forbidden")
    return jsonify(error=error, reason="no notification in the batch is ours: "
                   + "; ".join(reasons)), status  # fmt: skip


def _known(services: Any, items: list[dict[str, Any]]) -> Known:
    """Our records of the batch's distinct subscriptions, read fresh in one round trip."""
    ids = sorted({named for item in items if (named := _subscription_id(item)) is not None})
    pipe = services.redis.pipeline(transaction=False)
    for subscription_id in ids:
        pipe.hgetall(store.subscription_key(subscription_id))
    return Known(dict(zip(ids, pipe.execute(), strict=True)), services.settings.tenant_id)


def _subscription_id(item: dict[str, Any]) -> str | None:
    """The subscription id the item names, if it could be one we made (Graph's are GUIDs)."""
    named = item.get("subscriptionId")
    # ASCII: redis-py encodes a key strictly, and a lone surrogate (`"\ud800"`) would be a 500.
    if isinstance(named, str) and 0 < len(named) <= 100 and named.isascii():
        return named
    return None


def _verified_notification(
    known: Known, item: dict[str, Any]
) -> tuple[str, tuple[str, str] | None]:
    """The mailbox it concerns, and the (event id, changeKey) it announces, if any."""
    return _verified_mailbox(known, item), echoes.announced(item)


def _verified_lifecycle(known: Known, item: dict[str, Any]) -> tuple[str, str, str]:
    event = item.get("lifecycleEvent")
    if not isinstance(event, str) or event not in LIFECYCLE_JOBS:
        raise InvalidItem("unknown lifecycleEvent", malformed=True)
    mailbox = _verified_mailbox(known, item)  # the subscription id checked first
    return event, item["subscriptionId"], mailbox


def _verified_mailbox(known: Known, item: dict[str, Any]) -> str:
    subscription_id = _subscription_id(item)
    if subscription_id is None:
        raise InvalidItem("missing subscriptionId", malformed=True)
    record = known.records[subscription_id]
    mailbox, expected = record.get(b"user_id"), record.get(b"client_state")
    # A record without both is not ours yet (half written, or left by a deletion): with no
    # clientState an empty one would match, and with no mailbox there is nothing to sync.
    if not mailbox or not expected:
        raise InvalidItem("unknown subscription")
    offered = item.get("clientState")
    if not isinstance(offered, str) or not hmac.compare_digest(_utf8(offered), expected):
        raise InvalidItem("clientState mismatch")
    if known.tenant and item.get("tenantId") not in (None, known.tenant):
        raise InvalidItem("foreign tenant")
    return mailbox.decode()


def _utf8(text: str) -> bytes:
    # JSON may carry a lone surrogate (`"\ud800"`): strict UTF-8 would raise, a 500.
    return text.encode("utf-8", "surrogatepass")


def _news(conn: redis.Redis, verified: list[tuple[str, tuple[str, str] | None]]) -> Counter[str]:
    """Per mailbox, how many of its notifications announce a state we do not hold yet. Echoes
    count as heard from (subscriptions.scheduler watches for silent mailboxes)."""
    now = int(time.time())

    def heard(pipe: redis.client.Pipeline) -> None:
        for mailbox in {mailbox for mailbox, _ in verified}:
            pipe.hset(store.mailbox_key(mailbox), "last_notification_at", now)

    candidates = [(mailbox, *named) for mailbox, named in verified if named is not None]
    held = iter(echoes.held(conn, candidates, also=heard))
    news: Counter[str] = Counter()
    for mailbox, named in verified:
        if named is None or not next(held):
            news[mailbox] += 1
    return news


def _handshake() -> Response | None:
    """Echo the decoded validation token as plain text (never HTML: it is attacker-chosen)."""
    token = request.args.get("validationToken")
    if token is None:
        return None
    if len(token) > MAX_TOKEN_LENGTH:
        return Response("validationToken too long", status=400, mimetype="text/plain")
    return Response(token, status=200, mimetype="text/plain")


def _items() -> list[dict[str, Any]] | tuple[Response, int]:
    if request.mimetype != "application/json":
        reason = f"Content-Type must be application/json, got {request.mimetype or 'none'!r}"
        return jsonify(error="Unsupported Media Type", reason=reason), 415
    try:
        payload = json.loads(request.get_data(cache=False))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return jsonify(error="Bad Request", reason="body is not JSON"), 400
    value = payload.get("value") if isinstance(payload, dict) else None
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        return jsonify(error="Bad Request", reason="body must be an object with a value array"), 400
    return value
