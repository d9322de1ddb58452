"""One Graph subscription per staff mailbox: created, renewed, recreated and reconciled.

Each subscription watches `users/{id}/events` for created, updated and deleted events, with a
random `clientState` the receiver checks (stored in Redis, never logged), a lifecycle URL from
the start (Graph cannot add one later), and at most 10,000 minutes of life. Renewal falls well
before expiry, with jitter so a thousand mailboxes do not all renew in the same minute.

    exsync:subscription:{id}     hash: user_id, client_state, expires_at, renew_at, resource
    exsync:subscription_of:{uid} the subscription id watching that mailbox

After every create the mailbox is resynced: changes made while no subscription watched it
(and notifications sent before we knew the new id) are caught by its delta.
"""

from __future__ import annotations

import logging
import random
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from msgraph.generated.models.o_data_errors.o_data_error import ODataError
from msgraph.generated.models.subscription import Subscription

from core import audit, jobs, store
from core.job_kinds import JobKind
from workers import directory
from workers.context import WorkerContext

log = logging.getLogger(__name__)

CHANGE_TYPES = "created,updated,deleted"


@dataclass(frozen=True)
class Local:
    """Our record of a subscription."""

    subscription_id: str
    user_id: str
    expires_at: float
    renew_at: float


def local(ctx: WorkerContext, subscription_id: str) -> Local | None:
    raw = ctx.redis.hgetall(store.subscription_key(subscription_id))
    if not raw or b"user_id" not in raw:
        return None
    return Local(
        subscription_id,
        raw[b"user_id"].decode(),
        float(raw.get(b"expires_at", b"0")),
        float(raw.get(b"renew_at", b"0")),
    )


def all_local(ctx: WorkerContext) -> list[Local]:
    prefix = store.subscription_key("")
    found = []
    for key in ctx.redis.scan_iter(match=prefix + "*", count=500):
        record = local(ctx, key.decode()[len(prefix) :])
        if record is not None:
            found.append(record)
    return found


def for_mailbox(ctx: WorkerContext, user_id: str) -> Local | None:
    sub_id = ctx.redis.get(store.subscription_of_key(user_id))
    return local(ctx, sub_id.decode()) if sub_id else None


def create(ctx: WorkerContext, user_id: str) -> Local:
    """Subscribe to the mailbox (Graph validates our URLs first) and resync it."""
    s = ctx.settings
    client_state = secrets.token_urlsafe(32)
    expires = datetime.now(UTC) + timedelta(minutes=s.subscription_minutes)
    body = Subscription(
        change_type=CHANGE_TYPES,
        notification_url=f"{s.public_url}/webhooks/graph",
        lifecycle_notification_url=f"{s.public_url}/webhooks/graph/lifecycle",
        resource=f"users/{user_id}/events",
        expiration_date_time=expires,
        client_state=client_state,
    )
    made = ctx.run(ctx.gate.call(user_id, lambda: ctx.graph.subscriptions.post(body)))
    if made is None or not made.id:
        raise RuntimeError("Graph answered a subscription create without an id")
    expires_at = (made.expiration_date_time or expires).timestamp()
    record = Local(made.id, user_id, expires_at, _renew_at(ctx, expires_at))
    pipe = ctx.redis.pipeline()
    pipe.hset(
        store.subscription_key(made.id),
        mapping={"user_id": user_id, "client_state": client_state, "resource": body.resource,
                 "expires_at": expires_at, "renew_at": record.renew_at,
                 "created_at": time.time()},
    )  # fmt: skip
    pipe.set(store.subscription_of_key(user_id), made.id)
    pipe.execute()
    log.info("subscription.created", extra={"mailbox": user_id, "subscription": made.id})
    _emit("subscription.created", record)
    jobs.ensure_queued(ctx.queue, JobKind.SYNC_MAILBOX, user_id)
    return record


def renew(ctx: WorkerContext, subscription_id: str) -> Local | None:
    """Push the expiry out; a subscription Graph no longer has is recreated instead."""
    record = local(ctx, subscription_id)
    if record is None:
        return None
    expires = datetime.now(UTC) + timedelta(minutes=ctx.settings.subscription_minutes)
    item = ctx.graph.subscriptions.by_subscription_id(subscription_id)
    change = Subscription(expiration_date_time=expires)
    try:
        done = ctx.run(ctx.gate.call(record.user_id, lambda: item.patch(change)))
    except ODataError as exc:
        if exc.response_status_code != 404:
            raise
        log.info("subscription.vanished", extra={"subscription": subscription_id})
        return recreate(ctx, subscription_id)
    expires_at = done.expiration_date_time if done and done.expiration_date_time else expires
    renew_at = _renew_at(ctx, expires_at.timestamp())
    ctx.redis.hset(
        store.subscription_key(subscription_id),
        mapping={"expires_at": expires_at.timestamp(), "renew_at": renew_at},
    )
    renewed = Local(subscription_id, record.user_id, expires_at.timestamp(), renew_at)
    _emit("subscription.renewed", renewed)
    return renewed


def reauthorize(ctx: WorkerContext, subscription_id: str) -> Local | None:
    """Graph asks us to prove we still may read the mailbox: reauthorize, then renew."""
    record = local(ctx, subscription_id)
    if record is None:
        return None
    item = ctx.graph.subscriptions.by_subscription_id(subscription_id).reauthorize
    try:
        ctx.run(ctx.gate.call(record.user_id, lambda: item.post()))
    except ODataError as exc:
        if exc.response_status_code != 404:
            raise
        return recreate(ctx, subscription_id)
    _emit("subscription.reauthorized", record)
    return renew(ctx, subscription_id)


def recreate(ctx: WorkerContext, subscription_id: str) -> Local | None:
    """Replace a subscription Graph removed (or no longer has) and resync its mailbox."""
    record = local(ctx, subscription_id)
    if record is None:
        return None
    delete(ctx, subscription_id)
    if not (ctx.impersonation and ctx.syncing):
        return None
    fresh = create(ctx, record.user_id)
    _emit("subscription.recreated", fresh, replaces=subscription_id)
    return fresh


def delete(ctx: WorkerContext, subscription_id: str) -> None:
    """Delete at Graph (already gone is fine) and forget it here."""
    record = local(ctx, subscription_id)
    item = ctx.graph.subscriptions.by_subscription_id(subscription_id)
    try:
        ctx.run(ctx.gate.call(record.user_id if record else "app", lambda: item.delete()))
    except ODataError as exc:
        if exc.response_status_code != 404:
            raise
    forget(ctx, subscription_id)
    audit.emit(
        "subscription.deleted", subscription_id=subscription_id,
        mailbox=record.user_id if record else None,
    )  # fmt: skip


def forget(ctx: WorkerContext, subscription_id: str) -> None:
    record = local(ctx, subscription_id)
    pipe = ctx.redis.pipeline()
    pipe.delete(store.subscription_key(subscription_id))
    if (
        record is not None
        and ctx.redis.get(store.subscription_of_key(record.user_id)) == subscription_id.encode()
    ):
        pipe.delete(store.subscription_of_key(record.user_id))
    pipe.execute()


def ensure(ctx: WorkerContext, user_id: str) -> Local:
    """The mailbox's live subscription, created if it has none."""
    record = for_mailbox(ctx, user_id)
    if record is not None and record.expires_at > time.time():
        return record
    if record is not None:
        forget(ctx, record.subscription_id)
    return create(ctx, user_id)


def reconcile(ctx: WorkerContext) -> dict[str, int]:
    """Compare what Graph holds with what we want, and repair both ways.

    Wanted: one subscription per covered staff mailbox in app-only mode, none in delegated
    mode. Ours at Graph that nobody wants are deleted; ours we lost track of are adopted by
    deleting them (their clientState is unknown) and creating fresh ones; local records Graph
    no longer has are recreated.
    """
    wanted = {mailbox.user_id for _, mailbox in directory.staff_mailboxes(ctx)}
    if not (ctx.impersonation and ctx.syncing):
        wanted = set()
    at_graph = _ours_at_graph(ctx)
    mine = {r.subscription_id: r for r in all_local(ctx)}
    counts = {"subscribed": 0, "unsubscribed": 0, "lost_at_graph": 0}
    for sub_id, user_id in at_graph.items():
        if sub_id not in mine or user_id not in wanted:
            delete(ctx, sub_id)
            counts["unsubscribed"] += 1
    for sub_id, record in mine.items():
        if sub_id not in at_graph:
            forget(ctx, sub_id)
            if record.user_id in wanted:
                counts["lost_at_graph"] += 1
    for user_id in sorted(wanted):
        record = for_mailbox(ctx, user_id)
        if record is None or record.subscription_id not in at_graph:
            create(ctx, user_id)
            counts["subscribed"] += 1
    log.info("subscriptions.reconciled", extra=counts)
    return counts


def _ours_at_graph(ctx: WorkerContext) -> dict[str, str]:
    """Subscription id -> mailbox user id, for Graph's subscriptions that notify us."""
    ours = f"{ctx.settings.public_url}/webhooks/graph"
    found: dict[str, str] = {}
    page = ctx.run(ctx.gate.call("app", lambda: ctx.graph.subscriptions.get()))
    while page is not None:
        for sub in page.value or []:
            resource = (sub.resource or "").lower()
            if sub.id and sub.notification_url == ours and resource.startswith("users/"):
                found[sub.id] = (sub.resource or "").split("/")[1]
        if not page.odata_next_link:
            break
        builder = ctx.graph.subscriptions.with_url(page.odata_next_link)
        page = ctx.run(ctx.gate.call("app", lambda b=builder: b.get()))
    return found


def _emit(routing_key: str, record: Local, **more: str) -> None:
    expires = datetime.fromtimestamp(record.expires_at, UTC).isoformat()
    audit.emit(
        routing_key, subscription_id=record.subscription_id, mailbox=record.user_id,
        expires_at=expires, **more,
    )  # fmt: skip


def _renew_at(ctx: WorkerContext, expires_at: float) -> float:
    s = ctx.settings
    jitter = random.uniform(0, s.renew_jitter_minutes * 60)
    lifetime = expires_at - time.time()
    margin = min(s.renew_margin_minutes * 60 + jitter, lifetime / 2)
    return expires_at - margin
