"""`exsync scheduler`: the clock of the service. It only queues jobs; workers do the work.

One scheduler acts at a time: each holds a Redis lock while it leads and renews it every tick,
so two schedulers (a rolling deploy, a second replica) never double-renew; another takes over
within seconds when the leader dies. When each task last ran is kept in Redis, so a new
leader keeps the rhythm instead of starting it over.

Every tick the leader queues:
- renewals of subscriptions whose renew time (before expiry, with jitter) has come;
- on their intervals: the reconciliation of Graph's subscriptions with ours (app-only mode),
  a delta round for every mailbox (the safety net: Graph drops notifications silently during
  outages), a delta round for every mailbox on the short polling interval in delegated mode
  (Graph sends no notifications for shared calendars), and the Coconut reconciliation;
- a warning on any mailbox whose subscription is live but which heard nothing for too long;
- each minute, a full round of every mailbox with a refused item due again (core.refusals).

The daily full reconciliation needs no task of its own: each mailbox's window moves once a
day at its own time (workers.busy_time.sync_window), and the next safety-net round after the
move is a full one.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import redis
from prometheus_client import start_http_server

from core import jobs, logs, refusals, store
from core.job_kinds import JobKind
from core.settings import Settings
from subscriptions import manager
from workers.context import WorkerContext, install

log = logging.getLogger(__name__)

TICK_SECONDS = 1.0
LEADER_KEY = store.scheduler_leader_key()
LEADER_TTL = 10
SILENCE = "no change notification"


def run_scheduler(settings: Settings, *, host: str, port: int) -> int:
    ctx = WorkerContext(settings)
    install(ctx)
    logs.redact(*settings.secrets)
    if port:
        start_http_server(port, addr=host)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    me = uuid.uuid4().hex
    log.info("scheduler.started", extra={"scheduler": me})
    while not stop.wait(TICK_SECONDS):
        try:
            if _lead(ctx.redis, me):
                tick(ctx)
        except redis.RedisError:
            log.warning("scheduler.redis_unavailable", exc_info=True)
    if ctx.redis.get(LEADER_KEY) == me.encode():
        ctx.redis.delete(LEADER_KEY)
    log.info("scheduler.stopped", extra={"scheduler": me})
    return 0


def _lead(conn: redis.Redis, me: str) -> bool:
    """Take or keep the lead; the lock expires on its own if this process dies."""
    if conn.set(LEADER_KEY, me, nx=True, ex=LEADER_TTL):
        log.info("scheduler.leading", extra={"scheduler": me})
        return True
    if conn.get(LEADER_KEY) == me.encode():
        conn.expire(LEADER_KEY, LEADER_TTL)
        return True
    return False


def tick(ctx: WorkerContext) -> None:
    s = ctx.settings
    app_only = ctx.impersonation
    _renewals(ctx)
    if app_only:
        _every(
            ctx,
            "reconcile",
            s.reconcile_seconds,
            lambda: _queue(ctx, JobKind.RECONCILE_SUBSCRIPTIONS),
        )
    interval = s.safety_net_seconds if app_only else min(s.poll_seconds, s.safety_net_seconds)
    _every(ctx, "mailboxes", interval, lambda: _sync_every_mailbox(ctx))
    _every(
        ctx, "coconut", s.coconut_reconcile_seconds, lambda: _queue(ctx, JobKind.RECONCILE_COCONUT)
    )
    if app_only:
        _every(ctx, "silence", min(60.0, s.silence_seconds), lambda: _flag_silence(ctx))
    _every(ctx, "refused", 60.0, lambda: _retry_refused(ctx))


def _queue(ctx: WorkerContext, job: JobKind) -> None:
    jobs.ensure_queued(ctx.queue, job, "all")


def _every(ctx: WorkerContext, task: str, seconds: float, action: Callable[[], Any]) -> None:
    key = store.scheduler_last_key(task)
    last = ctx.redis.get(key)
    now = time.time()
    if last is not None and now - float(last) < seconds:
        return
    ctx.redis.set(key, now)
    action()


def _renewals(ctx: WorkerContext) -> None:
    now = time.time()
    for record in manager.all_local(ctx):
        if record.renew_at <= now:
            jobs.ensure_queued(ctx.queue, JobKind.RENEW_SUBSCRIPTION, record.subscription_id)


def _mailboxes(ctx: WorkerContext) -> list[str]:
    """Every matched staff mailbox (the directory records each match on the mailbox hash)."""
    prefix = store.mailbox_key("")
    found = []
    for key in ctx.redis.scan_iter(match=prefix + "*", count=500):
        if ctx.redis.hexists(key, "staff_id"):
            found.append(key.decode()[len(prefix) :])
    return found


def _sync_every_mailbox(ctx: WorkerContext) -> None:
    for user_id in _mailboxes(ctx):
        jobs.ensure_queued(ctx.queue, JobKind.SYNC_MAILBOX, user_id)


def _retry_refused(ctx: WorkerContext) -> None:
    """Items Coconut refused are tried again on their own backoff, not the safety net's."""
    now = time.time()
    prefix = store.refused_key("")
    for key in ctx.redis.scan_iter(match=prefix + "*", count=500):
        user_id = key.decode()[len(prefix) :]
        due = refusals.next_retry(ctx.redis, user_id)
        if due is not None and due <= now:
            jobs.ensure_queued(ctx.queue, JobKind.SYNC_MAILBOX, user_id)


def _flag_silence(ctx: WorkerContext) -> None:
    """A live subscription on a mailbox that heard nothing for too long: Graph may be dropping
    its notifications. Say so and resync it."""
    now = time.time()
    for record in manager.all_local(ctx):
        if record.expires_at <= now:
            continue
        raw = ctx.redis.hget(store.mailbox_key(record.user_id), "last_notification_at")
        created = ctx.redis.hget(store.subscription_key(record.subscription_id), "created_at")
        heard = float(raw or created or now)
        warning = ctx.redis.hget(store.mailbox_key(record.user_id), "warning") or b""
        if now - heard <= ctx.settings.silence_seconds:
            if warning.startswith(SILENCE.encode()):
                ctx.redis.hdel(store.mailbox_key(record.user_id), "warning")
            continue
        if not warning:
            hours = (now - heard) / 3600
            ctx.redis.hset(
                store.mailbox_key(record.user_id), "warning",
                f"{SILENCE} for {hours:.1f} hours although subscribed; "
                "resynced by delta (Graph may be dropping notifications)",
            )  # fmt: skip
            jobs.ensure_queued(ctx.queue, JobKind.SYNC_MAILBOX, record.user_id)
