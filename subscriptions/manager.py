"""One Graph subscription per staff mailbox: created, renewed, recreated and reconciled.

Each subscription watches `users/{id}/events` for created, updated and deleted events, with a
random `clientState` the receiver checks (stored in Redis, never logged), a lifecycle URL from
the start (Graph cannot add one later), and at most 10,000 minutes of life. Renewal falls well
before expiry, with jitter so a thousand mailboxes do not all renew in the same minute.

    exsync:subscription:{id}     hash: user_id, client_state, expires_at, renew_at, resource,
                                 notification_url, created_at, authorized_at
    exsync:subscription_of:{uid} the subscription id watching that mailbox
    exsync:receiver_urls         every notificationUrl this deployment has subscribed with

After every create the mailbox is resynced: changes made while no subscription watched it
(and notifications sent before we knew the new id) are caught by its delta.

Graph allows one subscription per app, resource and changeType and answers a second one with
409 Conflict. A create that meets one looks for it (every page of GET /subscriptions): one of
ours whose clientState we hold and that notifies today's URL is adopted as it is; one of ours
otherwise (its record lost, as after a create whose answer never came, or notifying a URL this
deployment used before its public URL changed) is deleted and made afresh; another deployment's
(the same app registration, a URL that was never ours) is left alone, and the conflict is said
on the mailbox's User Accounts row and logged (`subscription.conflict`), then raised. The
reconciliation deletes ours whose URL is stale, never another deployment's.

Graph asks for reauthorization as often as every few minutes. One reauthorization (or renewal,
which reauthorizes too) serves REAUTHORIZE_QUIET seconds: a notice within them only checks that
the subscription is still there, and recreates it if not (all subscription jobs coalesce as one,
so a waiting reauthorization may have absorbed the recreate a removal asked for).
"""

from __future__ import annotations

import logging
import random
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

from msgraph.generated.models.o_data_errors.o_data_error import ODataError
from msgraph.generated.models.subscription import Subscription

from core import audit, jobs, store
from core.job_kinds import JobKind
from workers import directory
from workers.context import WorkerContext

log = logging.getLogger(__name__)

CHANGE_TYPES = "created,updated,deleted"
REAUTHORIZE_QUIET = 180.0  # seconds one reauthorization serves
RECORD_WAIT = 1.0  # a concurrent create's record, written just after Graph answered it
CONFLICT = "another subscription watches this mailbox"  # the row's warning starts so


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


def receiver_url(ctx: WorkerContext) -> str:
    """Where Graph notifies this deployment today."""
    return f"{ctx.settings.public_url}/webhooks/graph"


def create(ctx: WorkerContext, user_id: str, *, resolve: bool = True) -> Local:
    """Subscribe to the mailbox (Graph validates our URLs first) and resync it. A 409 (Graph
    holds one for the mailbox already) is resolved as the module says, unless not `resolve`."""
    s = ctx.settings
    client_state = secrets.token_urlsafe(32)
    expires = datetime.now(UTC) + timedelta(minutes=s.subscription_minutes)
    body = Subscription(
        change_type=CHANGE_TYPES,
        notification_url=receiver_url(ctx),
        lifecycle_notification_url=f"{s.public_url}/webhooks/graph/lifecycle",
        resource=f"users/{user_id}/events",
        expiration_date_time=expires,
        client_state=client_state,
    )
    # Before the create: one whose answer is lost is still known for ours by its URL.
    ctx.redis.sadd(store.receiver_urls_key(), receiver_url(ctx))
    try:
        made = ctx.run(ctx.gate.call(user_id, lambda: ctx.graph.subscriptions.post(body)))
    except ODataError as exc:
        if exc.response_status_code != 409 or not resolve:
            raise
        return _resolve_conflict(ctx, user_id, exc)
    if made is None or not made.id:
        raise RuntimeError("Graph answered a subscription create without an id")
    expires_at = (made.expiration_date_time or expires).timestamp()
    record = Local(made.id, user_id, expires_at, _renew_at(ctx, expires_at))
    now = time.time()
    pipe = ctx.redis.pipeline()
    pipe.hset(
        store.subscription_key(made.id),
        mapping={"user_id": user_id, "client_state": client_state, "resource": body.resource,
                 "notification_url": receiver_url(ctx), "expires_at": expires_at,
                 "renew_at": record.renew_at, "created_at": now, "authorized_at": now},
    )  # fmt: skip
    pipe.set(store.subscription_of_key(user_id), made.id)
    pipe.execute()
    log.info("subscription.created", extra={"mailbox": user_id, "subscription": made.id})
    _emit("subscription.created", record)
    _settled(ctx, user_id)
    return record


def _settled(ctx: WorkerContext, user_id: str) -> None:
    """The mailbox has its subscription: no conflict to report any more, and a round to read
    what changed while none watched it."""
    key = store.mailbox_key(user_id)
    warning = ctx.redis.hget(key, "warning")
    if warning and warning.startswith(CONFLICT.encode()):
        ctx.redis.hdel(key, "warning")
    jobs.ensure_queued(ctx.queue, JobKind.SYNC_MAILBOX, user_id)


def _resolve_conflict(ctx: WorkerContext, user_id: str, refused: ODataError) -> Local:
    """Graph already holds a subscription for the mailbox: adopt it, replace it, or report it."""
    live = _live_for(ctx, user_id)
    if live is None or not live.id:  # gone since (expired, deleted): once more
        log.info("subscription.conflict_gone", extra={"mailbox": user_id})
        return create(ctx, user_id, resolve=False)
    url = live.notification_url or ""
    record = local(ctx, live.id)
    if record is None and url == receiver_url(ctx):
        time.sleep(RECORD_WAIT)  # a create of ours running now writes its record next
        record = local(ctx, live.id)
    if record is not None and record.user_id == user_id and url == receiver_url(ctx):
        return _adopt(ctx, live, record)
    if record is not None or _was_ours(ctx, url):
        reason = "stale notificationUrl" if url != receiver_url(ctx) else "no record of it"
        log.info("subscription.replaced", extra={"mailbox": user_id, "subscription": live.id,
                                                  "reason": reason})  # fmt: skip
        delete(ctx, live.id)
        return create(ctx, user_id, resolve=False)
    parts = urlsplit(url)
    ctx.redis.hset(
        store.mailbox_key(user_id), "warning",
        f"{CONFLICT} ({live.id}, notifying {parts.scheme}://{parts.netloc}): the same app "
        "registration used by another deployment, and Graph allows only one; changes reach "
        "Coconut by the safety-net rounds alone until it is deleted there (or each deployment "
        "has its own app registration)",
    )  # fmt: skip
    log.warning("subscription.conflict", extra={"mailbox": user_id, "subscription": live.id,
                                                "notification_url": url})  # fmt: skip
    raise refused


def _adopt(ctx: WorkerContext, live: Subscription, record: Local) -> Local:
    """One of ours Graph holds and we know the clientState of: the mailbox's subscription."""
    expires_at = live.expiration_date_time.timestamp() if live.expiration_date_time else 0.0
    expires_at = expires_at or record.expires_at
    adopted = Local(record.subscription_id, record.user_id, expires_at, _renew_at(ctx, expires_at))
    pipe = ctx.redis.pipeline()
    pipe.hset(store.subscription_key(adopted.subscription_id),
              mapping={"expires_at": expires_at, "renew_at": adopted.renew_at})  # fmt: skip
    pipe.set(store.subscription_of_key(adopted.user_id), adopted.subscription_id)
    pipe.execute()
    log.info("subscription.adopted", extra={"mailbox": adopted.user_id,
                                            "subscription": adopted.subscription_id})  # fmt: skip
    _settled(ctx, adopted.user_id)
    return adopted


def _was_ours(ctx: WorkerContext, url: str) -> bool:
    """A notificationUrl this deployment has subscribed with, today's or an earlier one's."""
    return url == receiver_url(ctx) or bool(ctx.redis.sismember(store.receiver_urls_key(), url))


def _live_for(ctx: WorkerContext, user_id: str) -> Subscription | None:
    """The app's subscription at Graph on the mailbox's events (by id or by address), the one
    with our change types first."""
    address = ctx.redis.hget(store.mailbox_key(user_id), "address") or b""
    names = {user_id.lower(), address.decode().lower()} - {""}
    found = [sub for sub in _at_graph(ctx) if _watched(sub) in names]
    wanted = set(CHANGE_TYPES.split(","))
    found.sort(key=lambda sub: set((sub.change_type or "").split(",")) != wanted)
    return found[0] if found else None


def _watched(sub: Subscription) -> str:
    """The mailbox (id or address, lower case) whose events the subscription watches, or ''."""
    parts = (sub.resource or "").strip("/").lower().split("/")
    return parts[1] if len(parts) == 3 and parts[0] == "users" and parts[2] == "events" else ""


def _at_graph(ctx: WorkerContext) -> Iterator[Subscription]:
    """Every subscription of the app at Graph, page after page."""
    page = ctx.run(ctx.gate.call("app", lambda: ctx.graph.subscriptions.get()))
    while page is not None:
        yield from page.value or []
        if not page.odata_next_link:
            break
        builder = ctx.graph.subscriptions.with_url(page.odata_next_link)
        page = ctx.run(ctx.gate.call("app", lambda b=builder: b.get()))


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
        mapping={"expires_at": expires_at.timestamp(), "renew_at": renew_at,
                 "authorized_at": time.time()},  # renewing reauthorizes too
    )  # fmt: skip
    renewed = Local(subscription_id, record.user_id, expires_at.timestamp(), renew_at)
    _emit("subscription.renewed", renewed)
    return renewed


def reauthorize(ctx: WorkerContext, subscription_id: str) -> Local | None:
    """Graph asks us to prove we still may read the mailbox: reauthorize, then renew; within
    REAUTHORIZE_QUIET of the last authorization, only make sure Graph still has it."""
    record = local(ctx, subscription_id)
    if record is None:
        return None
    item = ctx.graph.subscriptions.by_subscription_id(subscription_id)
    quiet = time.time() - _authorized_at(ctx, subscription_id) < REAUTHORIZE_QUIET
    try:
        if quiet:
            ctx.run(ctx.gate.call(record.user_id, lambda: item.get()))
        else:
            ctx.run(ctx.gate.call(record.user_id, lambda: item.reauthorize.post()))
    except ODataError as exc:
        if exc.response_status_code != 404:
            raise
        return recreate(ctx, subscription_id)
    if quiet:
        log.info("subscription.reauthorized_lately", extra={"subscription": subscription_id})
        return record
    ctx.redis.hset(store.subscription_key(subscription_id), "authorized_at", time.time())
    _emit("subscription.reauthorized", record)
    return renew(ctx, subscription_id)


def _authorized_at(ctx: WorkerContext, subscription_id: str) -> float:
    """When it was last created, reauthorized or renewed (epoch; 0 unknown)."""
    found = ctx.redis.hmget(store.subscription_key(subscription_id), "authorized_at", "created_at")
    return max((float(v) for v in found if v), default=0.0)


def recreate(ctx: WorkerContext, subscription_id: str) -> Local | None:
    """Replace a subscription Graph removed (or no longer has) and resync its mailbox."""
    record = local(ctx, subscription_id)
    if record is None:
        return None
    delete(ctx, subscription_id)
    if not (ctx.impersonation and ctx.syncing):
        return None
    try:
        fresh = create(ctx, record.user_id)
    except ODataError as exc:
        if exc.response_status_code != 409:
            raise
        return None  # another deployment's holds the mailbox: reported on its row
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


def subscribe(ctx: WorkerContext, user_id: str) -> Local | None:
    """`ensure` for a job that covers many mailboxes: another deployment's subscription to this
    one (Graph's 409, reported on its User Accounts row) fails neither the job nor the others;
    None then."""
    try:
        return ensure(ctx, user_id)
    except ODataError as exc:
        if exc.response_status_code != 409:
            raise
        return None


def reconcile(ctx: WorkerContext) -> dict[str, int]:
    """Compare what Graph holds with what we want, and repair both ways.

    Wanted: one subscription per covered staff mailbox in app-only mode, none in delegated
    mode. Ours at Graph (_ours_at_graph) that notify a stale URL (the public URL changed) or
    that nobody wants are deleted; ours we lost track of are adopted by deleting them (their
    clientState is unknown) and creating fresh ones; local records Graph no longer has are
    recreated. Another deployment's are never touched: a mailbox one of them holds is counted
    under `conflicts` and reported on its row (create).
    """
    wanted = {mailbox.user_id for _, mailbox in directory.staff_mailboxes(ctx)}
    if not (ctx.impersonation and ctx.syncing):
        wanted = set()
    mine = {r.subscription_id: r for r in all_local(ctx)}
    at_graph = _ours_at_graph(ctx, set(mine))
    counts = {"subscribed": 0, "unsubscribed": 0, "lost_at_graph": 0, "stale_url": 0,
              "conflicts": 0}  # fmt: skip
    kept = set()
    for sub_id, (user_id, url) in at_graph.items():
        if url != receiver_url(ctx):
            delete(ctx, sub_id)
            counts["stale_url"] += 1
        elif sub_id not in mine or user_id not in wanted:
            delete(ctx, sub_id)
            counts["unsubscribed"] += 1
        else:
            kept.add(sub_id)
    for sub_id, record in mine.items():
        if sub_id not in at_graph:
            forget(ctx, sub_id)
            if record.user_id in wanted:
                counts["lost_at_graph"] += 1
    for user_id in sorted(wanted):
        record = for_mailbox(ctx, user_id)
        if record is None or record.subscription_id not in kept:
            try:
                create(ctx, user_id)
            except ODataError as exc:
                if exc.response_status_code != 409:
                    raise
                counts["conflicts"] += 1
                continue
            counts["subscribed"] += 1
    log.info("subscriptions.reconciled", extra=counts)
    return counts


def _ours_at_graph(ctx: WorkerContext, mine: set[str]) -> dict[str, tuple[str, str]]:
    """Subscription id -> (mailbox user id, notificationUrl), for Graph's subscriptions of this
    deployment: those we hold a record of (`mine`) and those that notify a URL this deployment
    has subscribed with, today's or an earlier public URL's."""
    urls = {u.decode() for u in ctx.redis.smembers(store.receiver_urls_key())}
    urls.add(receiver_url(ctx))
    found: dict[str, tuple[str, str]] = {}
    for sub in _at_graph(ctx):
        parts = (sub.resource or "").strip("/").split("/")
        url = sub.notification_url or ""
        ours = sub.id in mine or url in urls
        if sub.id and ours and parts[0].lower() == "users" and len(parts) > 1:
            found[sub.id] = (parts[1], url)
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
