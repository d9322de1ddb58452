"""`/metrics` serves the state gauges read from Redis: queue depth and age, failed jobs,
subscriptions by state and the soonest expiry."""

from __future__ import annotations

import time

import redis
from prometheus_client.parser import text_string_to_metric_families
from rq import Queue

from core import store
from core.settings import load_settings
from webhooks.app import create_app


def scrape(redis_url: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    client = create_app(load_settings(redis_url=redis_url)).test_client()
    answer = client.get("/metrics")
    assert answer.status_code == 200
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(answer.get_data(as_text=True)):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def test_queue_and_subscription_gauges_follow_redis(
    redis_url: str, redis_conn: redis.Redis
) -> None:
    queue = Queue("exsync", connection=redis_conn)
    queue.enqueue("workers.mailboxes.sync_mailbox", "m-1", job_id="probe-1")
    queue.enqueue("workers.mailboxes.sync_mailbox", "m-2", job_id="probe-2")
    now = time.time()
    redis_conn.hset(store.subscription_key("s-1"), mapping={"expires_at": now + 3 * 86_400})
    redis_conn.hset(store.subscription_key("s-2"), mapping={"expires_at": now + 3_600})
    redis_conn.hset(store.subscription_key("s-3"), mapping={"expires_at": now - 60})

    samples = scrape(redis_url)

    assert samples["exsync_queue_depth"][()] == 2
    assert samples["exsync_queue_oldest_job_age_seconds"][()] >= 0
    assert samples["exsync_jobs_failed"][()] == 0
    subscriptions = samples["exsync_subscriptions"]
    assert subscriptions[(("state", "active"),)] == 1
    assert subscriptions[(("state", "expiring"),)] == 1
    assert subscriptions[(("state", "expired"),)] == 1
    assert samples["exsync_subscription_seconds_to_expiry"][()] < 0


def test_metrics_answer_without_redis_instead_of_failing_the_scrape() -> None:
    client = create_app(load_settings(redis_url="redis://127.0.0.1:1/0")).test_client()
    answer = client.get("/metrics")
    assert answer.status_code == 200
    assert b"exsync_queue_depth" not in answer.data


def test_the_receivers_count_what_they_accept_and_refuse(
    redis_url: str, redis_conn: redis.Redis
) -> None:
    redis_conn.hset(
        store.subscription_key("s-ok"), mapping={"user_id": "u-1", "client_state": "cs"}
    )
    client = create_app(load_settings(redis_url=redis_url)).test_client()
    before = scrape(redis_url).get("exsync_notifications_total", {})

    def count(samples: dict, outcome: str) -> float:
        return samples.get((("outcome", outcome), ("source", "graph")), 0.0)

    items = [{"subscriptionId": "s-ok", "clientState": "cs"},
             {"subscriptionId": "s-ok", "clientState": "wrong"}]  # fmt: skip
    assert client.post("/webhooks/graph", json={"value": items}).status_code == 202
    after = scrape(redis_url)["exsync_notifications_total"]
    assert count(after, "accepted") - count(before, "accepted") == 1
    assert count(after, "clientState mismatch") - count(before, "clientState mismatch") == 1
