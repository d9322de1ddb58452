"""`exsync status` shows what an operator asks first, from Redis alone: whether anything syncs,
the queue's depth and its oldest waiting job's age, running and failed jobs, subscriptions
expiring within a day, mailboxes in error and every staff member's row; it exits 1 when someone
needs to act (tests/test_connection_truth.py compares it with the User Accounts tab)."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import redis
from rq.utils import utcformat

from core import jobs, store
from core.staff_status import ROSTER_KEY
from tests.cli_support import invoke
from tests.harness import TENANT
from workers.runner import PromptWorker

REFUSED = "Exchange refused access to this mailbox (403 ErrorAccessDenied)"
# The app registration in the settings, as the demo and the test harness run: it syncs.
SYNCING = {"EXSYNC_TENANT_ID": TENANT, "EXSYNC_CLIENT_ID": "app", "EXSYNC_CLIENT_SECRET": "s"}


def line(output: str, prefix: str) -> str:
    return next(text for text in output.splitlines() if text.startswith(prefix))


def staff(conn: redis.Redis, staff_id: str, email: str, user_id: str, **state: str) -> None:
    person = {"name": email.split("@")[0].title(), "email": email, "takes_appointments": True}
    conn.hset(ROSTER_KEY, staff_id, json.dumps(person))
    conn.hset(store.staff_key(staff_id), mapping={"user_id": user_id, "address": email, **state})
    conn.hset(store.mailbox_key(user_id), mapping={"staff_id": staff_id, "address": email})


def subscription(conn: redis.Redis, sub_id: str, user_id: str, expires_in: float) -> None:
    conn.hset(
        store.subscription_key(sub_id),
        mapping={"user_id": user_id, "client_state": "x", "expires_at": time.time() + expires_in},
    )


def a_failed_job(conn: redis.Redis) -> None:
    """A job that really ran and failed: int("not a number") raises ValueError."""
    queue = jobs.queue("exsync", conn)
    queue.enqueue("builtins.int", "not a number", job_id="appointment-9")
    PromptWorker([queue], connection=conn, serializer=jobs.SERIALIZER).work(burst=True)


def a_job_waiting_for(conn: redis.Redis, minutes: int) -> None:
    job = jobs.queue("exsync", conn).enqueue("builtins.len", "x", job_id="mailbox-u-1")
    waited = datetime.now(UTC) - timedelta(minutes=minutes)
    conn.hset(job.key, "enqueued_at", utcformat(waited))


def test_status_json_has_queue_subscriptions_and_mailboxes_in_error_and_exits_1(
    redis_url: str, redis_conn: redis.Redis
) -> None:
    staff(redis_conn, "1", "ann@bank.example", "u-1")
    staff(redis_conn, "2", "bob@bank.example", "u-2", error=REFUSED)
    redis_conn.hset(store.mailbox_key("u-2"), "fault", "Graph broke off the delta round")
    subscription(redis_conn, "s-1", "u-1", expires_in=2 * 3600)
    subscription(redis_conn, "s-2", "u-2", expires_in=3 * 86_400)
    subscription(redis_conn, "s-3", "u-3", expires_in=-60)
    a_failed_job(redis_conn)
    a_job_waiting_for(redis_conn, minutes=2)

    done = invoke(redis_url, "status", "--json", env=SYNCING)
    assert done.exit_code == 1, done.output
    status = json.loads(done.stdout)
    assert (status["connection"], status["syncing"]) == ("environment", True)
    assert status["queue"]["depth"] == 1
    assert 115 <= status["queue"]["oldest_waiting_seconds"] < 180
    assert status["queue"]["running"] == 0
    assert status["queue"]["failed"] == 1
    assert status["subscriptions"] == {"total": 3, "expiring_within_a_day": 1, "expired": 1}
    assert status["mailboxes_in_error"] == [
        {
            "mailbox": "u-2",
            "address": "bob@bank.example",
            "problem": "Graph broke off the delta round",
        }
    ]
    assert status["counts"]["error"] == 1
    rows = {u["email"]: u for u in status["users"]}
    assert rows["bob@bank.example"]["state"] == "error"
    assert rows["bob@bank.example"]["problem"] == REFUSED


def test_status_text_shows_the_same_and_exits_1_for_a_staff_member_in_error(
    redis_url: str, redis_conn: redis.Redis
) -> None:
    staff(redis_conn, "1", "ann@bank.example", "u-1")
    staff(redis_conn, "2", "bob@bank.example", "u-2", error=REFUSED)
    subscription(redis_conn, "s-1", "u-1", expires_in=2 * 3600)
    a_job_waiting_for(redis_conn, minutes=1)

    done = invoke(redis_url, "status", env=SYNCING)
    assert done.exit_code == 1, "a staff member in error is a problem"
    lines = done.stdout.splitlines()
    assert lines[0] == "connection: environment   access: subscriptions"
    assert line(done.stdout, "queue: ").startswith("queue: 1 waiting (oldest 6")
    assert "running 0   failed 0" in line(done.stdout, "queue: ")
    assert line(done.stdout, "subscriptions: ") == (
        "subscriptions: 1   expiring within a day 1   expired 0"
    )
    assert line(done.stdout, "mailboxes in error: ") == "mailboxes in error: 0"
    assert "syncing 1   warnings 0   errors 1" in done.stdout
    assert any(line.strip().startswith("error") and REFUSED in line for line in lines)


def test_status_exits_0_when_nobody_needs_to_act(redis_url: str, redis_conn: redis.Redis) -> None:
    staff(redis_conn, "1", "ann@bank.example", "u-1")
    subscription(redis_conn, "s-1", "u-1", expires_in=3 * 86_400)
    done = invoke(redis_url, "status", env=SYNCING)
    assert done.exit_code == 0, done.output
    assert "queue: 0 waiting (oldest 0 s)   running 0   failed 0" in done.stdout
    assert "syncing 1   warnings 0   errors 0" in done.stdout


def test_a_failed_job_alone_makes_status_exit_1(redis_url: str, redis_conn: redis.Redis) -> None:
    staff(redis_conn, "1", "ann@bank.example", "u-1")
    a_failed_job(redis_conn)
    done = invoke(redis_url, "status", "--json", env=SYNCING)
    assert done.exit_code == 1
    assert json.loads(done.stdout)["queue"]["failed"] == 1


def test_nothing_configured_is_no_row_syncing_and_exits_1(
    redis_url: str, redis_conn: redis.Redis
) -> None:
    """Neither a saved connection nor the settings' app registration: nothing can sync."""
    staff(redis_conn, "1", "ann@bank.example", "u-1")
    done = invoke(redis_url, "status")
    assert done.exit_code == 1, done.output
    assert done.stdout.startswith("connection: not_configured")
    assert "Not configured. Nothing syncs: nothing is set up." in done.stdout
    assert "syncing 0   warnings 0   errors 0   not connected 1" in done.stdout


def test_part_of_the_app_registration_is_named_and_nothing_syncs(
    redis_url: str, redis_conn: redis.Redis
) -> None:
    staff(redis_conn, "1", "ann@bank.example", "u-1")
    env = {"EXSYNC_TENANT_ID": TENANT, "EXSYNC_CLIENT_ID": "app"}
    status = json.loads(invoke(redis_url, "status", "--json", env=env).stdout)
    assert status["connection"] == "not_configured"
    assert "EXSYNC_CLIENT_SECRET not set" in status["connection_detail"]
    assert status["users"][0]["state"] == "not_connected"
