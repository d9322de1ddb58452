"""Prometheus metric families, defined once for every process.

Counters and histograms are updated where things happen (receivers, jobs, the Graph gate).
Gauges that describe shared state (queue depth and age, subscriptions and their time to
expiry, failed jobs) are read from Redis at scrape time by `StateCollector`, so any process can
serve them and none has to keep them up to date.

The web app runs several gunicorn processes; `exsync web` points `PROMETHEUS_MULTIPROC_DIR` at a
fresh directory so that `/metrics` adds up the counters of all of them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import redis
from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from rq import Queue
from rq.registry import FailedJobRegistry, StartedJobRegistry

from core import store

log = logging.getLogger(__name__)

NOTIFICATIONS = Counter(
    "exsync_notifications",
    "Webhook items received, by source (graph, coconut) and outcome (accepted, duplicate, "
    "or the reason they were refused).",
    ["source", "outcome"],
)
JOB_SECONDS = Histogram(
    "exsync_job_duration_seconds",
    "Time a job took, by job function and result.",
    ["job", "result"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
GRAPH_CALLS = Counter("exsync_graph_requests", "Graph requests made, by answer status.", ["status"])
THROTTLE_WAIT = Counter(
    "exsync_throttle_wait_seconds",
    "Time spent waiting on Graph throttling (Retry-After and the per-mailbox slots).",
)
SYNC_LAG = Histogram(
    "exsync_sync_lag_seconds",
    "From the oldest change noticed for an item (a webhook, a notification, a poll) to the end "
    "of the round that applied it, by direction (to_exchange, to_coconut).",
    ["direction"],
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900),
)
DELTA_FALLBACKS = Counter(
    "exsync_delta_fallbacks",
    "Mailbox rounds read whole by calendarView because delta misbehaved, by why: repeated_link, "
    "no_progress, pages, items, time, no_link, unavailable (503/504), or backoff (delta failed "
    "on that mailbox lately).",
    ["reason"],
)
AUDIT_PUBLISHED = Counter("exsync_audit_events_published", "Audit events sent to the broker.")
AUDIT_DROPPED = Counter(
    "exsync_audit_events_dropped",
    "Audit events dropped, by reason (broker down, queue full); a sync never waits for them.",
    ["reason"],
)


class StateCollector(Collector):
    """Queue, failed-job and subscription gauges read from Redis when scraped. The queue is
    the service's own (core.jobs.queue), so the waiting job it reads is read as JSON."""

    def __init__(self, queue: Queue) -> None:
        self.queue = queue
        self.conn: redis.Redis = queue.connection

    def collect(self) -> Iterator[Metric]:
        try:
            yield from self._queue()
            yield from self._subscriptions()
            yield from self._mailbox_lag()
        except redis.RedisError as exc:
            # A scrape must not fail because Redis is down; /readyz reports that.
            log.warning("metrics.redis_unavailable", extra={"error": type(exc).__name__})

    def _queue(self) -> Iterator[Metric]:
        queue = self.queue
        depth = GaugeMetricFamily("exsync_queue_depth", "Jobs waiting in the queue.")
        depth.add_metric([], queue.count)
        yield depth
        age = GaugeMetricFamily(
            "exsync_queue_oldest_job_age_seconds", "Age of the oldest waiting job (0 if none)."
        )
        oldest = queue.get_job_ids(0, 1)
        job = queue.fetch_job(oldest[0]) if oldest else None
        enqueued = job.enqueued_at.timestamp() if job and job.enqueued_at else None
        age.add_metric([], max(0.0, time.time() - enqueued) if enqueued else 0.0)
        yield age
        running = GaugeMetricFamily("exsync_jobs_running", "Jobs being run by a worker.")
        running.add_metric([], StartedJobRegistry(queue=queue).count)
        yield running
        failed = GaugeMetricFamily("exsync_jobs_failed", "Jobs in the failed registry.")
        failed.add_metric([], FailedJobRegistry(queue=queue).count)
        yield failed

    def _subscriptions(self) -> Iterator[Metric]:
        by_state = GaugeMetricFamily(
            "exsync_subscriptions", "Graph subscriptions we hold, by state.", labels=["state"]
        )
        expiry = GaugeMetricFamily(
            "exsync_subscription_seconds_to_expiry",
            "Seconds until the soonest subscription expires (negative: already expired).",
        )
        now = time.time()
        states = {"active": 0, "expiring": 0, "expired": 0}
        soonest: float | None = None
        for key in self.conn.scan_iter(match=store.subscription_key("*"), count=500):
            raw = self.conn.hget(key, "expires_at")
            if not raw:
                continue
            left = store.epoch(raw.decode()) - now
            soonest = left if soonest is None else min(soonest, left)
            states["expired" if left <= 0 else "expiring" if left < 86_400 else "active"] += 1
        for state, count in states.items():
            by_state.add_metric([state], count)
        yield by_state
        if soonest is not None:
            expiry.add_metric([], soonest)
        yield expiry

    def _mailbox_lag(self) -> Iterator[Metric]:
        """How long each staff mailbox's oldest change has waited for a completed delta round
        (0 when it is caught up): the number to alert on when Outlook changes stop reaching
        Coconut, whether notifications, the queue or the workers are behind."""
        lag = GaugeMetricFamily(
            "exsync_mailbox_sync_lag_seconds",
            "Seconds the oldest change noticed for a staff mailbox has waited for a completed "
            "delta round (0: caught up).",
            labels=["mailbox"],
        )
        now = time.time()
        prefix = store.mailbox_key("")
        keys = [k.decode() for k in self.conn.scan_iter(match=prefix + "*", count=500)]
        pipe = self.conn.pipeline(transaction=False)
        for key in keys:
            user_id = key[len(prefix) :]
            pipe.hexists(key, "staff_id")
            pipe.get(store.noticed_key("mailbox", user_id))
            pipe.get(store.reading_key("mailbox", user_id))
        answers = pipe.execute()
        for index, key in enumerate(keys):
            matched, noticed, reading = answers[3 * index : 3 * index + 3]
            if not matched:
                continue
            since = min((float(v) for v in (noticed, reading) if v), default=now)
            lag.add_metric([key[len(prefix) :]], max(0.0, now - since))
        yield lag
