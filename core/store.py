"""The Redis connection and the name of every key the service keeps there.

All state lives in Redis (AOF in production) so web processes, workers and the scheduler are
stateless and can run on any number of machines. Every key is built here, by the function
named after it, so a reader sees the whole layout in one place:

  the coalescing protocol (core.jobs), per item kind and item
    exsync:dirty:{kind}:{item}          counter: changes arrived since the item's job last read
    exsync:announced:{kind}             zset: per dirty item, the newest version hints announced
    exsync:noticed:{kind}:{item}        when the oldest change not yet read was noticed (epoch)
    exsync:reading:{kind}:{item}        the same, for the changes the running round applies
    exsync:lock:{kind}:{item}           one worker at a time per item
  receivers
    exsync:delivery:{source}:{id}       seen webhook delivery ids (dedupe window)
  Graph subscriptions (subscriptions.manager)
    exsync:subscription:{id}            hash: mailbox, client_state, expires_at, resource
    exsync:subscription_of:{user_id}    the subscription id of one mailbox
  one staff member and their mailbox
    exsync:staff:{staff_id}             hash: matched mailbox (user_id, address), warning
    exsync:staff:{staff_id}:mailbox_override   the admin's address for the match
    exsync:mailbox:{user_id}            hash: sync state (delta cursor, window, reconciled)
    exsync:block:{user_id}              hash: Graph event id -> busy block in Coconut (json)
    exsync:refused:{user_id}            hash: items Coconut refused, and their retries
    exsync:held:{user_id}               deletions held back for the admin (mass-delete guard)
    exsync:projected:{user_id}          hash: Graph event id -> our projection (json)
    exsync:projection:{kind}:{item_id}  hash: mailbox -> our projection of a Coconut item
    exsync:graph:{what}:{app}:{mailbox} Graph's per-mailbox concurrency slots (core.throttle)
  the whole deployment
    exsync:staff_epoch                  moves when a staff round begins (stale staff copies)
    exsync:roster, exsync:enabled_staff the staff listed in Coconut; those enabled by hand
    exsync:initial_sync[:user|:items:{staff_id}]   the initial sync's progress
    exsync:connection                   hash: the admin's Exchange connection
    exsync:delegated:access_token       the service account's cached access token
    exsync:lock:delegated:refresh       one process refreshes the delegated token at a time
    exsync:disconnect                   hash: what the last Disconnect removed
    exsync:coconut:reconciled_at        the Coconut safety net's checkpoint
    exsync:scheduler:leader, exsync:scheduler:last:{task}   the scheduler's lease and clocks
  admin sign-in (webhooks.admin, core.admin_accounts)
    exsync:admin:user:{email}, exsync:admin:session:{sid}, exsync:admin:signin-failures:{email},
    exsync:admin:authflow:{state}, exsync:admin:tokens, exsync:admin:token:{digest}

A function given "*" for an id gives the pattern that scans every key of its shape.
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


def _key(*parts: object) -> str:
    return ":".join([PREFIX, *(str(part) for part in parts)])


def dirty_key(kind: str, item: str) -> str:
    return _key("dirty", kind, item)


def announced_key(kind: str) -> str:
    return _key("announced", kind)


def noticed_key(kind: str, item: str) -> str:
    return _key("noticed", kind, item)


def reading_key(kind: str, item: str) -> str:
    return _key("reading", kind, item)


def lock_key(kind: str, item: str) -> str:
    return _key("lock", kind, item)


def delivery_key(source: str, delivery_id: str) -> str:
    return _key("delivery", source, delivery_id)


def subscription_key(subscription_id: str) -> str:
    return _key("subscription", subscription_id)


def subscription_of_key(user_id: str) -> str:
    return _key("subscription_of", user_id)


def staff_key(staff_id: str) -> str:
    return _key("staff", staff_id)


def mailbox_override_key(staff_id: str) -> str:
    return _key("staff", staff_id, "mailbox_override")


def mailbox_key(user_id: str) -> str:
    return _key("mailbox", user_id)


def block_key(user_id: str) -> str:
    return _key("block", user_id)


def refused_key(user_id: str) -> str:
    return _key("refused", user_id)


def held_key(user_id: str) -> str:
    return _key("held", user_id)


def projected_key(mailbox: str) -> str:
    return _key("projected", mailbox)


def projection_key(kind: str, item_id: str) -> str:
    return _key("projection", kind, item_id)


def graph_gate_key(what: str, app: str, mailbox: str) -> str:
    return _key("graph", what, app, mailbox)


def staff_epoch_key() -> str:
    """Moves whenever a staff round begins: workers' copies of staff members read before it
    are stale (workers.context.WorkerContext.staff)."""
    return _key("staff_epoch")


def roster_key() -> str:
    return _key("roster")


def enabled_staff_key() -> str:
    return _key("enabled_staff")


def initial_sync_key(*parts: str) -> str:
    """The run (no parts), one staff member's ("user", id) or their items ("items", id)."""
    return _key("initial_sync", *parts)


def connection_key() -> str:
    return _key("connection")


def delegated_token_key() -> str:
    return _key("delegated", "access_token")


def delegated_lock_key() -> str:
    return _key("lock", "delegated", "refresh")


def disconnect_key() -> str:
    return _key("disconnect")


def coconut_reconciled_key() -> str:
    return _key("coconut", "reconciled_at")


def scheduler_key(*parts: str) -> str:
    """The leader's lease ("leader") or a task's last run ("last", task)."""
    return _key("scheduler", *parts)


def admin_key(*parts: str) -> str:
    """Admin sign-in state: ("user", email), ("session", sid), ("signin-failures", email),
    ("authflow", state), ("tokens",), ("token", digest)."""
    return _key("admin", *parts)


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
