"""The Redis connection and the names of every key the service keeps there.

All state lives in Redis (AOF in production) so web processes, workers and the scheduler are
stateless and can run on any number of machines. Keys are named here, once, so a reader can see
the whole layout in one place:

    exsync:delivery:{source}:{id}      seen webhook delivery ids (dedupe window)
    exsync:dirty:{kind}:{key}          a change arrived for this item since its job last read
    exsync:noticed:{kind}:{key}        when the oldest change not yet read was noticed (epoch)
    exsync:reading:{kind}:{key}        the same, for the changes the running round applies
    exsync:lock:{kind}:{key}           one worker at a time per mailbox or appointment
    exsync:subscription:{id}           hash: mailbox, client_state, expires_at, resource
    exsync:mailbox:{user_id}           hash: sync state of one staff mailbox
    exsync:appointment:{id}            hash: mailbox user id -> projected event (json)
    exsync:block:{user_id}             hash: Graph event id -> external absence (json)
"""

from __future__ import annotations

from datetime import datetime

import redis

PREFIX = "exsync"


def connect(url: str) -> redis.Redis:
    """A client with short timeouts: a receiver must answer 503 fast when Redis is down."""
    return redis.Redis.from_url(
        url,
        socket_connect_timeout=2,
        socket_timeout=5,
        health_check_interval=30,
        retry_on_timeout=False,
    )


def key(*parts: object) -> str:
    return ":".join([PREFIX, *(str(part) for part in parts)])


def delivery_key(source: str, delivery_id: str) -> str:
    return key("delivery", source, delivery_id)


def dirty_key(kind: str, item: str) -> str:
    return key("dirty", kind, item)


def staff_epoch_key() -> str:
    """Moves whenever a staff round begins: workers' copies of staff members read before it
    are stale (workers.context.WorkerContext.staff)."""
    return key("staff_epoch")


def announced_key(kind: str) -> str:
    """A sorted set: per dirty item, the newest version its hints announced (core.jobs)."""
    return key("announced", kind)


def noticed_key(kind: str, item: str) -> str:
    return key("noticed", kind, item)


def reading_key(kind: str, item: str) -> str:
    return key("reading", kind, item)


def lock_key(kind: str, item: str) -> str:
    return key("lock", kind, item)


def subscription_key(subscription_id: str) -> str:
    return key("subscription", subscription_id)


def mailbox_key(user_id: str) -> str:
    return key("mailbox", user_id)


def appointment_key(appointment_id: str) -> str:
    return key("appointment", appointment_id)


def block_key(user_id: str) -> str:
    return key("block", user_id)


def epoch(value: str) -> float:
    """A stored instant (`expires_at` and the like): epoch seconds or ISO-8601 with an offset."""
    try:
        return float(value)
    except ValueError:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def seen_delivery(conn: redis.Redis, source: str, delivery_id: str) -> bool:
    """Whether this delivery was accepted before (senders redeliver for about a day)."""
    return bool(conn.exists(delivery_key(source, delivery_id)))


def remember_delivery(conn: redis.Redis, source: str, delivery_id: str, ttl: int = 86_400) -> None:
    """Record an accepted delivery, once its job is queued: marking it first would turn the
    sender's retry into a "duplicate" whenever the enqueue after it failed (Redis going away
    between the two), and the change would be lost. Two copies racing both enqueue, which the
    coalesced job absorbs."""
    conn.set(delivery_key(source, delivery_id), 1, ex=ttl)
