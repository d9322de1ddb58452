"""Who asks for a full reconciliation, and the pure rules it runs on (issue 16).

Receivers and admin pages never call Graph or Coconut: asking is a mark on the mailbox hash and
two coalesced jobs (core.reconcile). Saving a setting that changes what the sync makes asks for
every mailbox; signing in somewhere else forgets every cursor. The comparison of Coconut's
blocks with our records (workers.held_blocks), the refusal backoff (core.refusals) and the
daily window's spread (workers.busy_time.sync_window) are checked without any I/O but Redis.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import redis

from core import connection, jobs, reconcile, refusals, store
from core.coconut.models import Absence, AbsenceWrite
from core.secrets import SecretBox, generate_key
from core.sync_records import Block
from tests.test_admin_support import (
    Browser,
    a_staff_member,
    make_accounts,
    make_app,
    valid_settings,
)
from workers.busy_time import sync_window
from workers.held_blocks import compare, digest, held_digest


def connected_admin(redis_url: str, conn: redis.Redis) -> Browser:
    """An admin on the Configuration tab of a connected service with two matched mailboxes."""
    make_accounts(conn)
    key = generate_key()
    browser = Browser(make_app(redis_url, secret_key=key))
    browser.sign_in()
    browser.get("/admin/exchange")
    assert browser.post("/admin/exchange", valid_settings()).status_code == 303
    connection.mark_connected(conn, SecretBox(key), "refresh-token", "sync@bank.example")
    a_staff_member(conn, "1", "ann@bank.example", "u-1")
    a_staff_member(conn, "2", "bob@bank.example", "u-2")
    for user_id in ("u-1", "u-2"):
        conn.hset(store.mailbox_key(user_id), mapping={"delta_link": "https://x/delta?t=1",
                                                       "window": "w", "cursor_at": 1})  # fmt: skip
    browser.get("/admin/exchange")
    return browser


def test_saving_the_titles_toggle_reconciles_every_mailbox_at_once(
    redis_url: str, redis_conn: redis.Redis
) -> None:
    admin = connected_admin(redis_url, redis_conn)
    saved = admin.post("/admin/exchange", valid_settings(client_secret="", show_event_titles="y"))
    assert saved.status_code == 303
    for user_id in ("u-1", "u-2"):
        asked = reconcile.last(redis_conn, user_id)
        assert asked.requested_at > 0 and "show_event_titles" in asked.reason
    queued = sorted(jobs.queue("exsync", redis_conn).get_job_ids())
    assert queued == ["mailbox-u-1", "mailbox-u-2", "staff_items-1", "staff_items-2"]


def test_saving_what_changes_no_rule_asks_for_nothing(
    redis_url: str, redis_conn: redis.Redis
) -> None:
    admin = connected_admin(redis_url, redis_conn)
    saved = admin.post("/admin/exchange", valid_settings(client_secret="", display_name="EXO"))
    assert saved.status_code == 303
    assert reconcile.last(redis_conn, "u-1").requested_at == 0
    assert jobs.queue("exsync", redis_conn).get_job_ids() == []


def test_a_new_tenant_forgets_every_cursor(redis_url: str, redis_conn: redis.Redis) -> None:
    admin = connected_admin(redis_url, redis_conn)
    moved = admin.post("/admin/exchange", valid_settings(client_secret="", tenant_id="fab.example"))
    assert moved.status_code == 303
    for user_id in ("u-1", "u-2"):
        left = redis_conn.hmget(store.mailbox_key(user_id), "delta_link", "window", "cursor_at")
        assert left == [None, None, None]
        assert redis_conn.hget(store.mailbox_key(user_id), "staff_id")  # the match stays


# ---------------------------------------------------------------- pure rules

TORONTO = ZoneInfo("America/Toronto")
START = datetime(2026, 12, 9, 15, 0, tzinfo=UTC)


def write(title: str = "Dentist", hours: int = 1) -> AbsenceWrite:
    return AbsenceWrite(user_id=1, start=START, end=START + timedelta(hours=hours),
                        all_day=False, timezone="America/Toronto", title=title,
                        external_id="ev-1", external_version="ck-1")  # fmt: skip


def held(absence_id: int, sent: AbsenceWrite, **changes: object) -> Absence:
    """The absence as Coconut answers it: the times in the staff member's zone."""
    fields = {
        "id": absence_id, "user_id": sent.user_id, "start": sent.start.astimezone(TORONTO),
        "end": sent.end.astimezone(TORONTO), "all_day": sent.all_day, "timezone": sent.timezone,
        "title": sent.title, "notes": None, "source": "external",
        "external_provider": "microsoft_exchange", "external_id": sent.external_id,
        "external_version": sent.external_version, "version": 1, "updated_at": START,
        **changes,
    }  # fmt: skip
    return Absence(**fields)  # type: ignore[arg-type]


def test_a_block_as_coconut_answers_it_has_the_digest_of_what_we_sent() -> None:
    sent = write()
    assert held_digest(held(7, sent)) == digest(sent)
    assert digest(sent) != digest(write(title="Busy")), "a new title is a new block"
    assert digest(sent) != digest(write(hours=2))


def test_comparing_trusts_coconut_and_names_what_was_changed_or_deleted_there() -> None:
    sent = write()
    recorded = {
        "ev-1": Block(7, "", digest(sent), "ck-1"),
        "ev-2": Block(8, "series-1", "d2", "ck-2"),  # deleted in Coconut
        "ev-3": Block(0, "", ""),  # a pending create that never reached Coconut
    }
    listed = [
        held(7, sent, title="Free for walk-ins"),  # retitled in Coconut
        held(9, write(), external_id="ev-4"),  # Redis lost this one
    ]
    comparison = compare(recorded, listed)
    assert set(comparison.known) == {"ev-1", "ev-4"}, "Coconut's listing is the truth"
    assert comparison.known["ev-4"].absence_id == 9
    assert comparison.known["ev-1"].digest != recorded["ev-1"].digest, "so the round fixes it"
    assert [(c.event_id, c.what) for c in comparison.changed] == [
        ("ev-1", "changed"), ("ev-2", "deleted"),
    ]  # fmt: skip


def test_blocks_that_ended_before_the_window_are_history_left_alone() -> None:
    sent = write()
    recorded = {"ev-1": Block(7, "", digest(sent), "ck-1")}
    past = held(7, sent, title="Edited long ago")
    comparison = compare(recorded, [past], since=START + timedelta(days=1))
    assert comparison.known == {} and comparison.changed == [], "neither tracked nor reported"
    assert set(compare(recorded, [past], since=START).known) == {"ev-1"}


def test_an_unchanged_block_keeps_the_changekey_it_was_made_from() -> None:
    sent = write()
    recorded = {"ev-1": Block(7, "series-1", digest(sent), "ck-1")}
    comparison = compare(recorded, [held(7, sent)])
    assert comparison.known == recorded and comparison.changed == []


def test_a_refused_item_waits_longer_each_time_and_clears(redis_conn: redis.Redis) -> None:
    waits = []
    for _ in range(len(refusals.RETRY_DELAYS) + 1):
        found = refusals.record(redis_conn, "u-1", "ev-1", label="busy block 'Leave'",
                                reason="Coconut answered 422: too long", status=422)  # fmt: skip
        waits.append(round(found.retry_at - found.since))
    assert waits[0] == 60 and waits == sorted(waits) and waits[-1] == waits[-2] == 21_600
    (refusal,) = refusals.refused(redis_conn, "u-1")
    assert refusal.attempts == len(waits) and "'Leave' was refused" in refusal.text
    assert json.loads(redis_conn.hget(store.refused_key("u-1"), "ev-1"))["status"] == 422
    refusals.clear(redis_conn, "u-1", {"ev-1"})
    assert (
        refusals.refused(redis_conn, "u-1") == [] and refusals.next_retry(redis_conn, "u-1") is None
    )


def test_each_window_moves_once_a_day_at_its_mailboxs_own_time_spread_over_the_day() -> None:
    now = datetime(2026, 12, 5, 12, tzinfo=UTC).timestamp()
    start, end = sync_window("mailbox-a", 7, 180, now)
    assert end - start == timedelta(days=187) and start.timestamp() <= now - 7 * 86_400
    day_long = {sync_window("mailbox-a", 7, 180, now + h * 3600) for h in range(25)}
    assert len(day_long) == 2, "over a day, it moves exactly once"
    hours = Counter(sync_window(f"m{n}", 7, 180, now)[0].hour for n in range(2400))
    assert len(hours) == 24 and max(hours.values()) < 2 * min(hours.values()), "spread evenly"


def test_disconnecting_again_retries_a_disconnect_whose_job_gave_up(
    redis_url: str, redis_conn: redis.Redis
) -> None:
    admin = connected_admin(redis_url, redis_conn)
    connection.mark_disconnecting(redis_conn)  # its job exhausted its retries: nothing syncs
    admin.get("/admin/exchange/disconnect")
    answer = admin.post("/admin/exchange/disconnect", {"confirm": "yes"})
    assert answer.status_code == 303
    assert jobs.queue("exsync", redis_conn).get_job_ids() == ["disconnect-subscriptions"]
