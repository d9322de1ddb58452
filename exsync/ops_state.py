"""What an operator asks first, read from Redis alone (`exsync status`): how far behind the
queue is, what failed, which subscriptions are about to lapse, which mailboxes are in error.

A mailbox is in error when its last job recorded an error (Exchange refused a write) or a
delta fault (Graph broke off a round); both clear on the next good round.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import redis
from rq.registry import FailedJobRegistry, StartedJobRegistry

from core import jobs, store

DAY = 86_400


@dataclass(frozen=True)
class QueueState:
    depth: int  # jobs waiting
    oldest_waiting_seconds: float  # 0 when none waits
    running: int
    failed: int  # in the failed registry: `exsync failed list`


@dataclass(frozen=True)
class SubscriptionState:
    total: int
    expiring_within_a_day: int  # still live, but for less than a day
    expired: int


@dataclass(frozen=True)
class MailboxError:
    mailbox: str  # the Graph user id
    address: str
    problem: str


def queue_state(conn: redis.Redis, queue_name: str) -> QueueState:
    queue = jobs.queue(queue_name, conn)
    oldest = queue.get_job_ids(0, 1)
    job = queue.fetch_job(oldest[0]) if oldest else None
    enqueued = job.enqueued_at.timestamp() if job and job.enqueued_at else None
    return QueueState(
        depth=queue.count,
        oldest_waiting_seconds=round(max(0.0, time.time() - enqueued), 1) if enqueued else 0.0,
        running=StartedJobRegistry(queue=queue).count,
        failed=FailedJobRegistry(queue=queue).count,
    )


def subscription_state(conn: redis.Redis) -> SubscriptionState:
    now = time.time()
    left = []
    for key in conn.scan_iter(match=store.subscription_key("*"), count=500, _type="hash"):
        raw = conn.hget(key, "expires_at")
        if raw:
            left.append(store.epoch(raw.decode()) - now)
    return SubscriptionState(
        total=len(left),
        expiring_within_a_day=sum(0 < s < DAY for s in left),
        expired=sum(s <= 0 for s in left),
    )


def mailboxes_in_error(conn: redis.Redis) -> list[MailboxError]:
    prefix = store.mailbox_key("")
    found = []
    for key in conn.scan_iter(match=prefix + "*", count=500, _type="hash"):
        error, fault, address = conn.hmget(key, "error", "fault", "address")
        problem = (error or fault or b"").decode()
        if problem:
            mailbox = key.decode()[len(prefix) :]
            found.append(MailboxError(mailbox, (address or b"").decode(), problem))
    return sorted(found, key=lambda m: (m.address, m.mailbox))
