"""No mailbox stays unsynced because of Graph's delta paging (research/graph-reality.md item 1),
over the real path: the Graph emulator pages one staff mailbox's delta as Graph does at its
worst, and a real `exsync worker` still turns that staff member's Outlook events (a daily
meeting among them) into busy blocks in Coconut, and their deletions into removals. The mailbox
is read by calendarView instead (a full round), its row on User Accounts warns, the worker's
metric counts it, and delta is used again once the fault is gone and the back-off passed.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis

from core import jobs, staff_status, store
from core.staff_status import State
from tests.harness import System, wait_until
from tests.sync_support import Outlook, at, graph_fault, scrape, user_id, wait_blocks
from tests.test_mailbox_sync import QUIET, STAFF1, USER1, subscribed

DELTA_WARNING = "Graph's delta paging misbehaved"  # how the mailbox's warning starts
DAILY = 120  # a daily meeting for four months: more instances than one delta page of 100
FAULTS: dict[str, tuple[list[dict[str, Any]], str | None]] = {
    # what is armed on the staff member's mailbox -> the reason the worker's metric counts
    "repeated-link": ([{"kind": "delta_repeat_link"}], "repeated_link"),
    "changing-links": ([{"kind": "delta_changing_links"}], "no_progress"),
    "endless-empty-pages": ([{"kind": "delta_empty_pages", "pages": 100_000}], "no_progress"),
    "oversize-then-looping": (  # msgraph-sdk-dotnet #3070
        [{"kind": "delta_oversize"}, {"kind": "delta_changing_links"}],
        "no_progress",
    ),
    "503-on-recurring": (
        [{"kind": "delta_unavailable", "status": 503, "series": 2, "retry_after": 0}],
        "unavailable",
    ),
    "504-on-recurring": ([{"kind": "delta_unavailable", "status": 504, "series": 2}], "time"),
    # Odd but finite paging is read to its end: no fallback.
    "oversize-and-a-few-empty-pages": (
        [{"kind": "delta_oversize"}, {"kind": "delta_empty_pages", "pages": 3}],
        None,
    ),
}
SETTINGS = {
    **QUIET,
    "EXSYNC_SAFETY_NET_SECONDS": "5",  # rounds keep coming: delta is tried again on one
    "EXSYNC_DELTA_ROUND_SECONDS": "5",
    "EXSYNC_DELTA_RETRY_SECONDS": "1",
}


def day(offset: int) -> datetime:
    return (datetime.now(UTC) + timedelta(days=offset)).replace(minute=0, second=0, microsecond=0)


def titled(title: str) -> Any:
    return lambda blocks: [b for b in blocks if b["title"] == title]


def mailbox_state(conn: redis.Redis, uid: str) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in conn.hgetall(store.mailbox_key(uid)).items()}


def fallbacks(system: System) -> dict[str, float]:
    samples = scrape(f"http://127.0.0.1:{system.metrics_ports['worker-0']}/metrics")
    counted = samples.get("exsync_delta_fallbacks_total", {})
    return {dict(labels)["reason"]: value for labels, value in counted.items()}


def row_of(conn: redis.Redis) -> staff_status.StaffRow:
    return next(r for r in staff_status.rows(conn, polling=False) if r.staff_id == str(STAFF1))


@pytest.mark.parametrize("armed", list(FAULTS))
def test_a_mailbox_whose_delta_misbehaves_still_syncs(
    make_system,  # type: ignore[no-untyped-def]
    redis_conn: redis.Redis,
    armed: str,
) -> None:
    specs, reason = FAULTS[armed]
    system = make_system(graph_args=["--users", "3"], scheduler=True, metrics=True,
                         settings=SETTINGS)  # fmt: skip
    wait_until(lambda: subscribed(system), 60, what="a subscription per staff mailbox")
    wait_blocks(system, STAFF1, lambda bs: len(bs) >= 11, what="the seeded events")
    queue = jobs.queue("exsync", redis_conn)
    wait_until(lambda: not queue.count and not queue.started_job_registry.count, 60,
               what="the initial sync done")  # fmt: skip
    uid = user_id(system, USER1)
    for spec in specs:
        graph_fault(system, **spec, mailbox=uid)

    outlook = Outlook(system)
    d = day(2)
    daily = {"pattern": {"type": "daily", "interval": 1},
             "range": {"type": "numbered", "startDate": d.date().isoformat(),
                       "numberOfOccurrences": DAILY}}  # fmt: skip
    series = outlook.create(USER1, subject="Daily huddle", showAs="busy", start=at(d, 8),
                            end=at(d, 9), recurrence=daily)  # fmt: skip
    single = outlook.create(
        USER1,
        subject="Loan review",
        showAs="busy",
        start=at(d + timedelta(days=2), 13),
        end=at(d + timedelta(days=2), 14),
    )

    def synced(blocks: list[dict[str, Any]]) -> bool:
        return len(titled("Daily huddle")(blocks)) == DAILY and bool(titled("Loan review")(blocks))

    blocks = wait_blocks(system, STAFF1, synced, timeout=90, what="the daily meeting's blocks")
    assert series not in {b["external_id"] for b in blocks}, "blocks are per occurrence"
    state = mailbox_state(redis_conn, uid)
    if reason is None:
        assert not state.get("delta_fault") and state["delta_link"], state
        assert reason not in fallbacks(system) and row_of(redis_conn).state == State.SYNCING
    else:
        wait_until(lambda: fallbacks(system).get(reason, 0) >= 1, 30, what=f"{reason} counted")
        row = row_of(redis_conn)
        assert row.state == State.WARNING, row
        assert row.problem.startswith(DELTA_WARNING) and USER1 in row.problem, row.problem
        assert "calendarView" in row.problem

    # Deletions need proof, and get it: an occurrence (Graph says nothing of it in delta) and
    # a single event.
    huddles = sorted(titled("Daily huddle")(blocks), key=lambda b: b["start"])
    outlook.delete(USER1, huddles[3]["external_id"])
    outlook.delete(USER1, single)

    def deleted(blocks: list[dict[str, Any]]) -> bool:
        left = {b["external_id"] for b in titled("Daily huddle")(blocks)}
        gone = huddles[3]["external_id"] not in left and not titled("Loan review")(blocks)
        return gone and len(left) == DAILY - 1

    wait_blocks(system, STAFF1, deleted, timeout=90, what="the deleted events' blocks gone")

    # The fault goes: a later round uses delta again (after the back-off), and clears the
    # warning; a new event still becomes busy time.
    with system.graph_http() as http:
        http.delete("/_emulator/faults").raise_for_status()

    def delta_again() -> bool:
        now = mailbox_state(redis_conn, uid)
        return bool(now.get("delta_link")) and not now.get("delta_failures")

    wait_until(delta_again, 120, what="delta used again on the mailbox")
    assert not mailbox_state(redis_conn, uid).get("warning", "").startswith(DELTA_WARNING)
    assert row_of(redis_conn).state == State.SYNCING
    later = d + timedelta(days=3)
    outlook.create(USER1, subject="After the fault", showAs="busy", start=at(later, 10),
                   end=at(later, 11))  # fmt: skip
    wait_blocks(system, STAFF1, titled("After the fault"), what="a block by delta again")
    outlook.http.close()
