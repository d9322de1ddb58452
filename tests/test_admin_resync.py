"""User Accounts' levers queue the same resync as `exsync resync` (core.resync): Resync on a row
queues that staff member's items and mailbox; Recheck failed queues only those in error or with
a warning."""

from __future__ import annotations

import json

import redis

from core import jobs, reconcile, store
from core.staff_status import ROSTER_KEY
from tests.test_admin_support import Browser, make_accounts, make_app


def staff(conn: redis.Redis, staff_id: str, email: str, user_id: str = "", **state: str) -> None:
    person = {"name": email.split("@")[0].title(), "email": email, "takes_appointments": True}
    conn.hset(ROSTER_KEY, staff_id, json.dumps(person))
    if user_id:
        conn.hset(store.staff_key(staff_id), mapping={"user_id": user_id, "address": email,
                                                          **state})  # fmt: skip


def signed_in(redis_url: str, conn: redis.Redis) -> Browser:
    make_accounts(conn)
    browser = Browser(make_app(redis_url))
    browser.sign_in()
    assert browser.get("/admin/exchange/users").status_code == 200
    return browser


def test_resync_on_a_row_queues_that_staff_members_items_and_mailbox(
    redis_url: str, redis_conn: redis.Redis
) -> None:
    staff(redis_conn, "1", "ann@bank.example", "u-1")
    staff(redis_conn, "2", "bob@bank.example", "u-2")
    browser = signed_in(redis_url, redis_conn)
    assert browser.post("/admin/exchange/users/1/resync", {}).status_code == 303
    assert sorted(jobs.queue("exsync", redis_conn).get_job_ids()) == [
        "mailbox-u-1",
        "staff-1",
        "staff_items-1",
    ]
    # A resync is a full reconciliation: the mailbox's next round trusts no cursor.
    assert reconcile.last(redis_conn, "u-1").reason == "resync"
    assert reconcile.last(redis_conn, "u-2").requested_at == 0


def test_recheck_failed_queues_only_staff_in_error_or_with_a_warning(
    redis_url: str, redis_conn: redis.Redis
) -> None:
    staff(redis_conn, "1", "ann@bank.example", "u-1")
    staff(redis_conn, "2", "bob@bank.example", "u-2", error="Exchange refused access")
    staff(redis_conn, "3", "cy@bank.example")  # no mailbox matched: a warning
    browser = signed_in(redis_url, redis_conn)
    answer = browser.post("/admin/exchange/users/recheck", {"which": "failed"})
    assert answer.status_code == 303
    queued = sorted(jobs.queue("exsync", redis_conn).get_job_ids())
    assert queued == ["mailbox-u-2", "staff-2", "staff-3", "staff_items-2", "staff_items-3"]
