"""Microsoft Graph change and lifecycle notifications.

`POST /webhooks/graph`: the validation handshake, then for each notification item: the
subscription must be ours, its `clientState` must match (constant time) and its tenant must be
ours; each valid item marks its mailbox dirty and makes sure one `sync_mailbox` job is queued.
Graph counts only a 2xx within 3 seconds as delivered and drops notifications to slow
endpoints, so the answer never waits on anything but Redis.

`POST /webhooks/graph/lifecycle`: `reauthorizationRequired`, `subscriptionRemoved` and `missed`
go to the subscription manager's jobs.

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


class InvalidItem(Exception):
    """One notification item is not ours; it is dropped, the rest of the batch still counts.
    `malformed`: it is not even shaped like one of Graph's."""

    def __init__(self, reason: str, *, malformed: bool = False) -> None:
        super().__init__(reason)
        self.malformed = malformed


def _refusal(refused: list[InvalidItem]) -> tuple[Response, int]:
    """No item of the batch was ours: 400 if none was well formed, else 403, with the reasons."""
    reasons = sorted({str(exc) for exc in refused}) or ["value is empty"]
    malformed = all(exc.malformed for exc in refused)
    status, error = (400, "Bad Request") if malformed else (403, "Forbidden")
    return jsonify(error=error, reason="no notification in the batch is ours: "
                   + "; ".join(reasons)), status  # fmt: skip


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


@dataclass(frozen=True)
class Received(Generic[T]):
    services: Any
    items: int  # how many the batch held
    verified: list[T]


def _receive(
    verify: Callable[[Any, dict[str, Any]], T], *, refused_as: str, counted: bool
) -> Received[T]:
    """The batch's verified items; else the request ends with the validation handshake, or a
    4xx for a body we cannot read or a batch with no item of ours (each refused item's reason
    logged, and with `counted` in the notifications metric)."""
    handshake = _handshake()
    if handshake is not None:
        abort(handshake)
    items = _items()
    if isinstance(items, tuple):
        abort(make_response(*items))
    services = current_app.extensions["exsync"]
    verified: list[T] = []
    refused: list[InvalidItem] = []
    for item in items:
        try:
            verified.append(verify(services, item))
        except InvalidItem as exc:
            refused.append(exc)
            if counted:
                NOTIFICATIONS.labels(source="graph", outcome=str(exc)).inc()
            log.info(refused_as, extra={"reason": str(exc)})
    if not verified:
        abort(make_response(*_refusal(refused)))
    return Received(services, len(items), verified)


def _verified_notification(
    services: Any, item: dict[str, Any]
) -> tuple[str, tuple[str, str] | None]:
    """The mailbox it concerns, and the (event id, changeKey) it announces, if any."""
    return _verified_mailbox(services, item), echoes.announced(item)


def _verified_lifecycle(services: Any, item: dict[str, Any]) -> tuple[str, str, str]:
    event = item.get("lifecycleEvent")
    if not isinstance(event, str) or event not in LIFECYCLE_JOBS:
        raise InvalidItem("unknown lifecycleEvent", malformed=True)
    mailbox = _verified_mailbox(services, item)  # the subscription id checked first
    return event, item["subscriptionId"], mailbox


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


def _verified_mailbox(services: Any, item: dict[str, Any]) -> str:
    subscription_id = item.get("subscriptionId")
    if not isinstance(subscription_id, str) or not subscription_id or len(subscription_id) > 100:
        raise InvalidItem("missing subscriptionId", malformed=True)
    known = _subscription(services.redis, subscription_id)
    if not known:
        raise InvalidItem("unknown subscription")
    offered = item.get("clientState")
    expected = known.get(b"client_state", b"")
    if not isinstance(offered, str) or not hmac.compare_digest(offered.encode(), expected):
        raise InvalidItem("clientState mismatch")
    tenant = services.settings.tenant_id
    if tenant and item.get("tenantId") not in (None, tenant):
        raise InvalidItem("foreign tenant")
    return known[b"user_id"].decode()


def _subscription(conn: redis.Redis, subscription_id: str) -> dict[bytes, bytes]:
    """Our record of the subscription, cached briefly in this process: every notification
    needs it, and it only changes when a subscription is created, renewed or deleted."""
    now = time.monotonic()
    cached = _known.get(subscription_id)
    if cached is not None and cached[0] > now:
        return cached[1]
    record: dict[bytes, bytes] = conn.hgetall(store.subscription_key(subscription_id))  # type: ignore[assignment]
    if record:  # an unknown id is looked up again next time: it may be brand new
        if len(_known) > CACHE_SIZE:
            _known.clear()
        _known[subscription_id] = (now + CACHE_SECONDS, record)
    return record


CACHE_SECONDS = 30.0
CACHE_SIZE = 100_000
_known: dict[str, tuple[float, dict[bytes, bytes]]] = {}
