"""`/metrics` serves the state gauges read from Redis (queue depth and age, failed jobs,
subscriptions by state and the soonest expiry, each mailbox's sync lag), and after a real sync
the web app, the worker and the scheduler serve the families the issue asks for."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import httpx
import redis

from core import jobs, store
from core.job_kinds import JobKind
from core.settings import Settings, load_settings
from tests.harness import COCONUT_WEBHOOK_SECRET, METRICS_TOKEN, System, wait_until
from tests.sync_support import (
    CoconutAdmin,
    Outlook,
    Samples,
    at,
    parse_metrics,
    scrape,
    user_id,
    wait_blocks,
    wait_for_events,
)
from webhooks.app import create_app

USER1, STAFF1 = "user1@contoso.example", 1
BEARER = {"Authorization": f"Bearer {METRICS_TOKEN}"}


def app_settings(redis_url: str) -> Settings:
    return load_settings(
        redis_url=redis_url, coconut_webhook_secret=COCONUT_WEBHOOK_SECRET,
        metrics_token=METRICS_TOKEN,
    )  # fmt: skip


def scrape_app(redis_url: str) -> Samples:
    client = create_app(app_settings(redis_url)).test_client()
    answer = client.get("/metrics", headers=BEARER)
    assert answer.status_code == 200
    return parse_metrics(answer.get_data(as_text=True))


def scrape_web(system: System) -> Samples:
    """The web app's /metrics, which answers only with the token (the harness sets it)."""
    answer = httpx.get(f"{system.web_url}/metrics", headers=BEARER, timeout=10)
    assert answer.status_code == 200, answer.text
    return parse_metrics(answer.text)


def test_queue_and_subscription_gauges_follow_redis(
    redis_url: str, redis_conn: redis.Redis
) -> None:
    queue = jobs.queue("exsync", redis_conn)
    queue.enqueue(JobKind.SYNC_MAILBOX.path, "m-1", job_id="probe-1")
    queue.enqueue(JobKind.SYNC_MAILBOX.path, "m-2", job_id="probe-2")
    now = time.time()
    redis_conn.hset(store.subscription_key("s-1"), mapping={"expires_at": now + 3 * 86_400})
    redis_conn.hset(store.subscription_key("s-2"), mapping={"expires_at": now + 3_600})
    redis_conn.hset(store.subscription_key("s-3"), mapping={"expires_at": now - 60})
    for user in ("u-behind", "u-reading", "u-current"):
        redis_conn.hset(store.mailbox_key(user), "staff_id", "1")
    redis_conn.hset(store.mailbox_key("u-unmatched"), "last_sync_at", int(now))
    redis_conn.set(store.noticed_key("mailbox", "u-behind"), now - 30)
    redis_conn.set(store.noticed_key("mailbox", "u-reading"), now - 5)
    redis_conn.set(store.reading_key("mailbox", "u-reading"), now - 90)  # a round in progress

    samples = scrape_app(redis_url)

    assert samples["exsync_queue_depth"][()] == 2
    assert samples["exsync_queue_oldest_job_age_seconds"][()] >= 0
    assert samples["exsync_jobs_failed"][()] == 0
    subscriptions = samples["exsync_subscriptions"]
    assert subscriptions[(("state", "active"),)] == 1
    assert subscriptions[(("state", "expiring"),)] == 1
    assert subscriptions[(("state", "expired"),)] == 1
    assert samples["exsync_subscription_seconds_to_expiry"][()] < 0
    by_mailbox = samples["exsync_mailbox_sync_lag_seconds"].items()
    lag = {labels[0][1]: value for labels, value in by_mailbox}
    assert set(lag) == {"u-behind", "u-reading", "u-current"}
    assert 30 <= lag["u-behind"] < 40
    assert 90 <= lag["u-reading"] < 100  # counted from the oldest change, the one being read
    assert lag["u-current"] == 0


def test_metrics_answer_without_redis_instead_of_failing_the_scrape() -> None:
    client = create_app(app_settings("redis://127.0.0.1:1/0")).test_client()
    answer = client.get("/metrics", headers=BEARER)
    assert answer.status_code == 200
    assert b"exsync_queue_depth" not in answer.data


def test_the_receivers_count_what_they_accept_and_refuse(
    redis_url: str, redis_conn: redis.Redis
) -> None:
    redis_conn.hset(
        store.subscription_key("s-ok"), mapping={"user_id": "u-1", "client_state": "cs"}
    )
    client = create_app(app_settings(redis_url)).test_client()
    before = scrape_app(redis_url).get("exsync_notifications_total", {})

    def count(samples: dict, outcome: str) -> float:
        return samples.get((("outcome", outcome), ("source", "graph")), 0.0)

    items = [{"subscriptionId": "s-ok", "clientState": "cs"},
             {"subscriptionId": "s-ok", "clientState": "wrong"}]  # fmt: skip
    assert client.post("/webhooks/graph", json={"value": items}).status_code == 202
    after = scrape_app(redis_url)["exsync_notifications_total"]
    assert count(after, "accepted") - count(before, "accepted") == 1
    assert count(after, "clientState mismatch") - count(before, "clientState mismatch") == 1


def test_a_real_sync_shows_in_the_web_worker_and_scheduler_metrics(make_system) -> None:  # type: ignore[no-untyped-def]
    """Counters where things happen (receivers, jobs, the Graph gate), the sync lag of each
    mailbox from Redis: it grows while a change waits and falls to 0 once it is applied."""
    quiet = {"EXSYNC_SAFETY_NET_SECONDS": "3600", "EXSYNC_RECONCILE_SECONDS": "3600"}
    system = make_system(graph_args=["--users", "3"], scheduler=True, metrics=True,
                         settings=quiet)  # fmt: skip
    wait_until(lambda: len(system.graph_state()["subscriptions"]) == 3, 60, what="subscriptions")
    mailbox = user_id(system, USER1)
    coconut = CoconutAdmin(system)
    start = (datetime.now(UTC) + timedelta(days=3)).replace(hour=15, minute=0, second=0)
    appointment = coconut.book(start.isoformat(), staff_id=STAFF1)
    wait_for_events(system, USER1, f"exsync:appointment:{appointment}", 1, timeout=60)
    outlook = Outlook(system)
    day = datetime.now(UTC) + timedelta(days=5)
    outlook.create(USER1, subject="Branch meeting", start=at(day, 9), end=at(day, 10))
    wait_blocks(system, STAFF1, lambda blocks: len(blocks) >= 1, 60)
    wait_until(lambda: lag_of(system, mailbox) == 0, 30, what="the mailbox caught up")

    worker = scrape(f"http://127.0.0.1:{system.metrics_ports['worker-0']}/metrics")
    assert worker["exsync_graph_requests_total"][(("status", "ok"),)] > 0
    jobs_done = worker["exsync_job_duration_seconds_count"]
    for job in (JobKind.SYNC_APPOINTMENT.path, JobKind.SYNC_MAILBOX.path):
        assert jobs_done[(("job", job), ("result", "ok"))] >= 1
    lag_count, lag_sum = (
        worker["exsync_sync_lag_seconds_count"],
        worker["exsync_sync_lag_seconds_sum"],
    )
    for direction in ("to_exchange", "to_coconut"):
        key = (("direction", direction),)
        assert lag_count[key] >= 1
        assert 0 < lag_sum[key] / lag_count[key] < 60
    assert worker["exsync_throttle_wait_seconds_total"][()] >= 0
    web = scrape_web(system)
    notifications = web["exsync_notifications_total"]
    assert notifications[(("outcome", "accepted"), ("source", "coconut"))] >= 1
    assert notifications[(("outcome", "accepted"), ("source", "graph"))] >= 1
    assert web["exsync_subscriptions"][(("state", "active"),)] == 3
    assert len(web["exsync_mailbox_sync_lag_seconds"]) == 3
    scheduler = httpx.get(f"http://127.0.0.1:{system.metrics_ports['scheduler']}/metrics")
    assert "exsync_graph_requests_total" in scheduler.text

    system.processes["worker-0"].stop()
    outlook.create(USER1, subject="Team lunch", start=at(day, 12), end=at(day, 13))
    wait_until(lambda: lag_of(system, mailbox) >= 2, 30, what="the lag to grow")
    system.restart("worker-0")
    wait_until(lambda: lag_of(system, mailbox) == 0, 60, what="the lag to fall back to 0")


def lag_of(system: System, mailbox: str) -> float:
    return scrape_web(system)["exsync_mailbox_sync_lag_seconds"][(("mailbox", mailbox),)]
