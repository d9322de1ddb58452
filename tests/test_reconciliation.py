"""Every divergence heals (issue 16), over the real path: the web app, real workers and the
scheduler against both emulators and a real Redis.

A busy block deleted, moved or retitled in Coconut under us is put back; a block Coconut
refuses fails alone and is named until it fits; a Redis emptied, or restored from an older
snapshot, converges after the next Authorize with nothing doubled on either side.
"""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import redis

from core import jobs, reconcile, refusals, store
from core.job_kinds import JobKind
from tests.harness import System, wait_until
from tests.sync_support import CoconutAdmin, Outlook, at, busy_blocks, mark_of, user_id, wait_blocks
from tests.test_mailbox_sync import STAFF1, USER1, subscribed_system


def day(offset: int) -> datetime:
    return (datetime.now(UTC) + timedelta(days=offset)).replace(minute=0, second=0, microsecond=0)


def titled(title: str) -> Any:
    return lambda blocks: [b for b in blocks if b["title"] == title]


def run_cli(system: System, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "exsync.cli", *args], env=system.env, capture_output=True,
        text=True, timeout=120,
    )  # fmt: skip


def seeded(make_system) -> System:  # type: ignore[no-untyped-def]
    system = subscribed_system(make_system)
    wait_blocks(system, STAFF1, lambda bs: len(bs) >= 11, what="the seeded events")
    return system


def quiet(system: System, conn: redis.Redis) -> None:
    queue = jobs.queue("exsync", conn)
    wait_until(lambda: queue.count == 0 and queue.started_job_registry.count == 0, 90,
               what="the queue to drain")  # fmt: skip


def converged(system: System) -> dict[str, Any]:
    """Nothing doubled on either side: one block per event and staff member, one event of ours
    per mark and mailbox. Returns the counts for the caller's own checks."""
    blocks = [a for a in system.coconut_state()["absences"] if a["source"] == "external"]
    per_event = Counter((b["user_id"], b["external_id"]) for b in blocks)
    assert max(per_event.values(), default=1) == 1, f"a doubled block: {per_event.most_common(2)}"
    marks = Counter(
        (mailbox, mark_of(e))
        for mailbox, events in system.graph_state()["events"].items()
        for e in events
        if mark_of(e)
    )
    assert max(marks.values(), default=1) == 1, f"a doubled event: {marks.most_common(2)}"
    return {"blocks": Counter(b["user_id"] for b in blocks), "events": sum(marks.values())}


def test_a_block_deleted_in_coconut_is_made_again_and_the_mailbox_keeps_syncing(
    make_system,  # type: ignore[no-untyped-def]
) -> None:
    system = seeded(make_system)
    outlook, coconut = Outlook(system), CoconutAdmin(system)
    d = day(3)
    meeting = outlook.create(USER1, subject="Budget review", showAs="busy",
                             start=at(d, 9), end=at(d, 10))  # fmt: skip
    (block,) = titled("Budget review")(
        wait_blocks(system, STAFF1, titled("Budget review"), what="the meeting's block")
    )
    coconut.delete_block(block["id"])  # a Coconut admin, under us: no webhook tells us

    outlook.update(USER1, meeting, subject="Budget review (moved)", start=at(d, 11),
                   end=at(d, 12))  # fmt: skip
    outlook.create(USER1, subject="Lunch with CEO", showAs="busy", start=at(d, 12),
                   end=at(d, 13))  # fmt: skip

    blocks = wait_blocks(system, STAFF1, lambda bs: titled("Lunch with CEO")(bs)
                         and titled("Budget review (moved)")(bs),
                         what="the deleted block made again and the new one made")  # fmt: skip
    (again,) = titled("Budget review (moved)")(blocks)
    assert again["external_id"] == meeting and again["id"] != block["id"]
    converged(system)


def test_a_block_coconut_refuses_fails_alone_and_is_named_until_it_fits(
    make_system,
    redis_conn: redis.Redis,  # type: ignore[no-untyped-def]
) -> None:
    system = seeded(make_system)
    outlook = Outlook(system)
    system.coconut_http().patch("/_emulator/settings", json={"max_absence_days": 14})
    start = day(10).replace(hour=0)
    leave = outlook.create(USER1, subject="Parental leave", showAs="oof", isAllDay=True,
                           start=at(start, 0), end=at(start + timedelta(days=22), 0))  # fmt: skip
    outlook.create(USER1, subject="Lunch with CEO", showAs="busy", start=at(day(2), 12),
                   end=at(day(2), 13))  # fmt: skip

    blocks = wait_blocks(system, STAFF1, titled("Lunch with CEO"), what="the block after it")
    assert not titled("Parental leave")(blocks), "Coconut refused the 22-day block"
    mailbox = user_id(system, USER1)
    wait_until(lambda: refusals.refused(redis_conn, mailbox), 30, what="the refusal recorded")
    (refusal,) = refusals.refused(redis_conn, mailbox)
    assert refusal.event_id == leave and refusal.status == 422
    assert "'Parental leave'" in refusal.text and "422" in refusal.text

    # Still refused after the next full round (the rest of the mailbox keeps converging) ...
    reconcile.request(jobs.queue("exsync", redis_conn), str(STAFF1), mailbox, "test")
    quiet(system, redis_conn)
    (again,) = refusals.refused(redis_conn, mailbox)
    assert again.attempts == 2 and again.retry_at > refusal.retry_at

    # ... until the staff member splits the leave: the block is made and the refusal goes.
    outlook.update(USER1, leave, end=at(start + timedelta(days=14), 0))
    wait_blocks(system, STAFF1, titled("Parental leave"), what="the leave, now short enough")
    wait_until(lambda: not refusals.refused(redis_conn, mailbox), 30, what="the refusal cleared")
    converged(system)


def test_a_refused_item_due_again_is_retried_by_a_full_round(
    make_system,
    redis_conn: redis.Redis,  # type: ignore[no-untyped-def]
) -> None:
    system = seeded(make_system)
    coconut_settings = system.coconut_http()
    coconut_settings.patch("/_emulator/settings", json={"max_absence_days": 14})
    start = day(10).replace(hour=0)
    Outlook(system).create(USER1, subject="Sabbatical", showAs="oof", isAllDay=True,
                           start=at(start, 0), end=at(start + timedelta(days=30), 0))  # fmt: skip
    mailbox = user_id(system, USER1)
    wait_until(lambda: refusals.refused(redis_conn, mailbox), 60, what="the refusal recorded")
    coconut_settings.patch("/_emulator/settings", json={"max_absence_days": None})
    (refusal,) = refusals.refused(redis_conn, mailbox)
    assert not titled("Sabbatical")(busy_blocks(system, STAFF1))

    # Its delay has passed (the clock moved on): the next round is a full one and tries again.
    key = store.refused_key(mailbox)
    redis_conn.hset(key, refusal.event_id, redis_conn.hget(key, refusal.event_id).replace(
        str(refusal.retry_at).encode(), b"0"))  # fmt: skip
    jobs.ensure_queued(jobs.queue("exsync", redis_conn), JobKind.SYNC_MAILBOX, mailbox)
    wait_blocks(system, STAFF1, titled("Sabbatical"), what="the refused block made on its retry")
    wait_until(lambda: not refusals.refused(redis_conn, mailbox), 30, what="the refusal cleared")


def test_a_block_moved_and_retitled_in_coconut_is_put_back_with_a_warning_naming_it(
    make_system,
    redis_conn: redis.Redis,  # type: ignore[no-untyped-def]
) -> None:
    system = seeded(make_system)
    coconut = CoconutAdmin(system)
    d = day(5)
    Outlook(system).create(USER1, subject="Branch audit", showAs="busy", start=at(d, 9),
                           end=at(d, 10))  # fmt: skip
    (block,) = titled("Branch audit")(
        wait_blocks(system, STAFF1, titled("Branch audit"), what="the audit's block")
    )
    moved = {"start": at(d, 15)["dateTime"] + "Z", "end": at(d, 16)["dateTime"] + "Z"}
    coconut.change_block(block["id"], title="Free for walk-ins", **moved)
    assert titled("Free for walk-ins")(busy_blocks(system, STAFF1))

    done = run_cli(system, "resync", USER1)
    assert done.returncode == 0, done.stderr

    (back,) = titled("Branch audit")(
        wait_blocks(system, STAFF1, titled("Branch audit"), what="the block put back")
    )
    assert back["id"] == block["id"] and back["start"] == block["start"]
    warning = redis_conn.hget(store.mailbox_key(user_id(system, USER1)), "warning") or b""
    assert "'Branch audit' (changed)" in warning.decode()
    last = reconcile.last(redis_conn, user_id(system, USER1))
    assert last.at > 0 and last.repaired.fixed == 1 and last.requested_at == 0


def test_from_an_empty_redis_the_next_authorize_converges_with_nothing_doubled(
    make_system,
    redis_conn: redis.Redis,  # type: ignore[no-untyped-def]
) -> None:
    system = seeded(make_system)
    coconut = CoconutAdmin(system)
    kept = coconut.book((day(2).replace(hour=15)).isoformat(), STAFF1)
    moved = coconut.book((day(3).replace(hour=15)).isoformat(), STAFF1)
    wait_until(lambda: our_event(system, USER1, moved), 60, what="the bookings projected")
    quiet(system, redis_conn)
    before = converged(system)

    redis_conn.flushdb()  # mappings, cursors, subscriptions, locks: all gone
    # Reassigned while Redis knows nothing: its job makes the new staff member's event, but
    # finds no mapping in user1's mailbox, so that one stays for now.
    coconut.change(moved, staff_id=2)
    Outlook(system).create(USER1, subject="After the loss", showAs="busy", start=at(day(3), 8),
                           end=at(day(3), 9))  # fmt: skip
    quiet(system, redis_conn)
    done = run_cli(system, "initial-sync")
    assert done.returncode == 0, done.stderr

    wait_blocks(system, STAFF1, titled("After the loss"), what="a block for the new event")
    wait_until(lambda: our_event(system, USER1, moved) is None, 60,
               what="the reassigned booking's old event found by our mark and removed")  # fmt: skip
    quiet(system, redis_conn)
    after = converged(system)
    assert our_event(system, USER1, kept) is not None
    assert our_event(system, "user2@contoso.example", moved) is not None
    assert after["events"] == before["events"]
    assert after["blocks"][STAFF1] == before["blocks"][STAFF1] + 1


def test_from_a_redis_restored_from_an_older_snapshot_the_next_authorize_converges(
    make_system,
    redis_conn: redis.Redis,  # type: ignore[no-untyped-def]
) -> None:
    system = seeded(make_system)
    quiet(system, redis_conn)
    snapshot = {key: redis_conn.dump(key) for key in redis_conn.scan_iter(count=1000)}

    outlook = Outlook(system)
    later = outlook.create(USER1, subject="Made after the snapshot", showAs="busy",
                           start=at(day(4), 8), end=at(day(4), 9))  # fmt: skip
    (first,) = titled("Made after the snapshot")(
        wait_blocks(system, STAFF1, titled("Made after the snapshot"), what="its block")
    )
    gone = next(b for b in busy_blocks(system, STAFF1) if b["external_id"] != later)
    outlook.delete(USER1, gone["external_id"])
    wait_blocks(system, STAFF1, lambda bs: all(b["id"] != gone["id"] for b in bs),
                what="the deleted event's block removed")  # fmt: skip
    quiet(system, redis_conn)
    expected = {(b["external_id"], b["title"]) for b in busy_blocks(system, STAFF1)}

    redis_conn.flushdb()
    for key, value in snapshot.items():
        redis_conn.restore(key, 0, value, replace=True)
    done = run_cli(system, "initial-sync")
    assert done.returncode == 0, done.stderr
    quiet(system, redis_conn)

    wait_until(lambda: {(b["external_id"], b["title"]) for b in busy_blocks(system, STAFF1)}
               == expected, 60, what="the blocks as Outlook has them")  # fmt: skip
    assert titled("Made after the snapshot")(busy_blocks(system, STAFF1))[0]["id"] == first["id"]
    converged(system)


def our_event(system: System, address: str, appointment_id: int) -> dict[str, Any] | None:
    mailbox = user_id(system, address)
    for event in system.graph_state()["events"].get(mailbox, []):
        if (mark_of(event) or "").endswith(f":appointment:{appointment_id}"):
            return event
    return None


def edited_in_outlook(make_system, redis_conn: redis.Redis, policy: str):  # type: ignore[no-untyped-def]
    """A booking projected into user1's Outlook, then moved and retitled there by the staff
    member; returns the system, the appointment and the warning the mailbox round wrote."""
    system = subscribed_system(make_system, EXSYNC_EDIT_POLICY=policy)
    booking = CoconutAdmin(system).book(day(2).replace(hour=15).isoformat(), STAFF1)
    wait_until(lambda: our_event(system, USER1, booking), 60, what="the booking projected")
    event = our_event(system, USER1, booking)
    assert event is not None
    Outlook(system).update(USER1, event["id"], subject="Moved by me", start=at(day(2), 17),
                           end=at(day(2), 18))  # fmt: skip
    key = store.mailbox_key(user_id(system, USER1))
    wait_until(lambda: b"was edited in Outlook" in (redis_conn.hget(key, "warning") or b""), 60,
               what="the edit noticed")  # fmt: skip
    return system, booking, (redis_conn.hget(key, "warning") or b"").decode()


def test_an_edit_in_outlook_is_put_back_and_the_warning_names_the_appointment(
    make_system,
    redis_conn: redis.Redis,  # type: ignore[no-untyped-def]
) -> None:
    system, booking, warning = edited_in_outlook(make_system, redis_conn, "restore")
    assert f"Coconut appointment {booking} ('Moved by me') was edited in Outlook" in warning
    assert "put back" in warning
    wait_until(lambda: (our_event(system, USER1, booking) or {}).get("subject") != "Moved by me",
               60, what="the edit put back")  # fmt: skip


def test_the_keep_policy_holds_against_the_coconut_reconciliation_and_a_resync(
    make_system,
    redis_conn: redis.Redis,  # type: ignore[no-untyped-def]
) -> None:
    system, booking, warning = edited_in_outlook(make_system, redis_conn, "keep")
    assert "the edit is kept for now" in warning
    queue = jobs.queue("exsync", redis_conn)
    jobs.ensure_queued(queue, JobKind.RECONCILE_COCONUT, "all")
    quiet(system, redis_conn)
    assert run_cli(system, "resync", USER1).returncode == 0
    quiet(system, redis_conn)
    kept = our_event(system, USER1, booking)
    assert kept is not None and kept["subject"] == "Moved by me", "the staff member's edit stands"


def test_a_staff_members_new_time_zone_moves_their_all_day_blocks_at_once(
    make_system,  # type: ignore[no-untyped-def]
) -> None:
    system = seeded(make_system)
    start = day(6).replace(hour=0)
    Outlook(system).create(USER1, subject="Training day", showAs="oof", isAllDay=True,
                           start=at(start, 0), end=at(start + timedelta(days=1), 0))  # fmt: skip
    (before,) = titled("Training day")(
        wait_blocks(system, STAFF1, titled("Training day"), what="the all-day block")
    )
    assert before["timezone"] == "America/Toronto"

    CoconutAdmin(system).change_user(STAFF1, timezone="America/Vancouver")

    def moved(blocks: list[dict[str, Any]]) -> bool:
        return all(b["timezone"] == "America/Vancouver" for b in titled("Training day")(blocks))

    (after,) = titled("Training day")(
        wait_blocks(system, STAFF1, moved, what="the block in the new zone")
    )
    assert after["start"].startswith(start.strftime("%Y-%m-%dT00:00:00"))
    assert after["start"].endswith("-08:00") and after["id"] == before["id"]
