"""The Redis connection and the name of every key the service keeps there.

All state lives in Redis (AOF in production) so web processes, workers and the scheduler are
stateless and can run on any number of machines. Every key is built here, by the one `Key`
named after it below, whose line shows the key's shape and what it holds: the whole layout in
one place. A call gives the ids in order (`mailbox_key(user_id)`); given "*" for an id, it
gives the pattern that scans every key of that shape.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

import redis

if TYPE_CHECKING:  # core.settings imports modules that import this one
    from core.settings import Settings

PREFIX = "exsync"


def connect_service(settings: Settings) -> redis.Redis:
    """The service's Redis, as EXSYNC_REDIS_URL and EXSYNC_REDIS_CA_FILE name it."""
    return connect(settings.redis_url, settings.redis_ca_file)


def connect(url: str, ca_file: str | None = None) -> redis.Redis:
    """A client with short timeouts: a receiver must answer 503 fast when Redis is down. The
    URL may name an ACL user and password (redis://user:password@host/0); a rediss:// server's
    certificate is checked against `ca_file` (EXSYNC_REDIS_CA_FILE), else the system's CAs."""
    tls = {"ssl_ca_certs": ca_file} if ca_file and url.startswith("rediss://") else {}
    return redis.Redis.from_url(
        url,
        socket_connect_timeout=2,
        socket_timeout=5,
        health_check_interval=30,
        retry_on_timeout=False,
        **tls,
    )


class Key:
    """One key's shape: `exsync:` and the template, its `{}` filled with the ids given."""

    def __init__(self, template: str) -> None:
        self.template = f"{PREFIX}:{template}"

    def __call__(self, *ids: object) -> str:
        return self.template.format(*ids)


# The coalescing protocol (core.jobs), per item kind and item.
dirty_key = Key("dirty:{}:{}")  # counter: changes arrived since the item's job last read
announced_key = Key("announced:{}")  # zset per kind: the newest version a dirty item's hints named
noticed_key = Key("noticed:{}:{}")  # when the oldest change not yet read was noticed (epoch)
reading_key = Key("reading:{}:{}")  # the same, for the changes the running round applies
lock_key = Key("lock:{}:{}")  # one worker at a time per item
# Receivers.
delivery_key = Key("delivery:{}:{}")  # (source, id) a webhook delivery claimed or accepted
# Graph subscriptions (subscriptions.manager).
subscription_key = Key("subscription:{}")  # hash: mailbox, client_state, expires_at, resource
subscription_of_key = Key("subscription_of:{}")  # (user_id) the subscription id of a mailbox
receiver_urls_key = Key("receiver_urls")  # set: every notificationUrl this deployment subscribed
# One staff member and their mailbox.
staff_key = Key("staff:{}")  # hash: the matched mailbox (user_id, address), warning, error
mailbox_override_key = Key("staff:{}:mailbox_override")  # the admin's address for the match
mailbox_key = Key("mailbox:{}")  # (user_id) hash: sync state (cursor, window, reconciled)
block_key = Key("block:{}")  # hash: Graph event id -> busy block we wrote (core.sync_records)
refused_key = Key("refused:{}")  # hash: blocks Coconut refused, and their retries
held_key = Key("held:{}")  # set: event ids whose removal waits for an admin
projected_key = Key("projected:{}")  # hash: Graph event id -> our projection (core.sync_records)
projection_key = Key("projection:{}:{}")  # (kind, item id) hash: mailbox -> our projection
graph_gate_key = Key("graph:{}:{}:{}")  # (what, app, mailbox) Graph's per-mailbox slots
# The whole deployment.
staff_epoch_key = Key("staff_epoch")  # moves when a staff round begins: staff copies are stale
roster_key = Key("roster")  # the staff Coconut lists
enabled_staff_key = Key("enabled_staff")  # with manual user syncing: the staff ids enabled
initial_sync_key = Key("initial_sync")  # hash: the initial sync's run
initial_sync_staff_key = Key("initial_sync:user:{}")  # hash: one staff member's part of it
initial_sync_items_key = Key("initial_sync:items:{}")  # set: their items still to write
connection_key = Key("connection")  # hash: the admin's Exchange connection
delegated_token_key = Key("delegated:access_token")  # the service account's cached token
delegated_lock_key = Key("delegated:refresh_lock")  # one process refreshes that token at once
disconnect_key = Key("disconnect")  # hash: what the last Disconnect removed
coconut_reconciled_key = Key("coconut:reconciled_at")  # the Coconut safety net's checkpoint
scheduler_leader_key = Key("scheduler:leader")  # the scheduler's lease
scheduler_last_key = Key("scheduler:last:{}")  # (task) when the scheduler last ran it
# Admin sign-in (webhooks.admin, core.admin_accounts).
admin_user_key = Key("admin:user:{}")  # hash: an admin's password hash, role, session epoch
admin_session_key = Key("admin:session:{}")  # JSON: a session's email and session epoch
admin_throttle_key = Key("admin:signin-throttle:{}:{}")  # (by, address|email) hash: n, since
admin_known_address_key = Key("admin:signed-in-from:{}:{}")  # (email, address) in 30 days
admin_authflow_key = Key("admin:authflow:{}")  # an Authorize flow under way, by its state
admin_tokens_key = Key("admin:tokens")  # hash: API token name -> its digest
admin_token_key = Key("admin:token:{}")  # hash: one API token, by digest


def epoch(value: str) -> float:
    """A stored instant (`expires_at` and the like): epoch seconds or ISO-8601 with an offset."""
    try:
        return float(value)
    except ValueError:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def claim_delivery(conn: redis.Redis, source: str, delivery_id: str, ttl: int = 10) -> bool:
    """Claim a delivery for one request, in one SET NX: False when another request holds it or
    it was accepted before, so of two copies arriving together exactly one goes on.

    The claim lasts `ttl` seconds until keep_delivery: longer than Redis may take to answer
    (connect 2 s, then 5 s), shorter than Coconut's first retry (30 s). If Redis goes away
    between the claim and the enqueue, the claim cannot be released, but it lapses before the
    retry comes, which is then accepted rather than taken for a duplicate."""
    return bool(conn.set(delivery_key(source, delivery_id), 1, nx=True, ex=ttl))


def keep_delivery(conn: redis.Redis, source: str, delivery_id: str, ttl: int = 86_400) -> None:
    """The claimed delivery's job is queued: its copies are duplicates for as long as senders
    redeliver (about a day)."""
    conn.set(delivery_key(source, delivery_id), 1, ex=ttl)


def release_delivery(conn: redis.Redis, source: str, delivery_id: str) -> None:
    """The claimed delivery's job could not be queued: the sender's retry must find it free."""
    conn.delete(delivery_key(source, delivery_id))
