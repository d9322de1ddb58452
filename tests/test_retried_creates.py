"""A create sent again after Graph already made it (graph-reality.md item 2), over the real path.

Graph refuses a repeated transactionId with 400 ErrorDuplicateTransactionId, as the Graph
emulator now does by default. Here the emulator carries out a create and answers it 503
(`fail_after_write`), so the worker's retry repeats the transactionId: one appointment through
its own job, then a staff member's items through the initial sync's `$batch`. Each must end
with one event per item, adopted by our mark and brought to the draft, no job failing (retries
are off, so a failure would be in the failed registry at once) and no hand-off to per-item jobs.
A lost Redis and a deleted event make the same refusal with nothing to adopt: the next
generation's transactionId makes the event again.

Seed (emulators/coconut/seed.py): staff 1-3 are user1-3@contoso.example.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from typing import Any

import redis

from core import jobs
from tests.harness import System, wait_until
from tests.sync_support import CoconutAdmin, graph_fault, mark_of, marked_events, user_id
from tests.test_appointment_sync import local, mark, next_weekday, wait_quiet
from tests.test_initial_sync import expected, projected, run_cli

USER1 = "user1@contoso.example"
NO_RETRIES = {"EXSYNC_JOB_RETRIES": "0"}
CREATE = "POST /v1.0/users/<user>/events"


def graph_routes(system: System) -> Counter[str]:
    with system.graph_http() as http:
        summary = http.get("/_emulator/summary").raise_for_status().json()
    return Counter(summary["counters"]["requests"])


def appointment_reads(system: System) -> int:
    """Coconut reads of one appointment by id: what an item's own job does, never the bulk
    round (it lists them)."""
    by_route = system.coconut_state()["requests"]["by_route"]
    return sum(n for route, n in by_route.items() if route.startswith("GET ")
               and route.endswith("/appointments/<int:appointment_id>"))  # fmt: skip


def settled(conn: redis.Redis, key: str, failed: Any) -> Callable[[], Any]:
    """Waits for every mapping of the item to name its event, or for a failed job."""

    def ready() -> Any:
        found = [json.loads(v) for v in conn.hvals(key)]
        return found if found and all(p["event_id"] for p in found) else failed.count > 0

    return ready


def test_a_create_retried_after_graph_made_it_adopts_the_event(
    make_system,  # type: ignore[no-untyped-def]
    redis_conn: redis.Redis,
) -> None:
    system = make_system(graph_args=["--users", "3"], settings=NO_RETRIES)
    mailbox = user_id(system, USER1)
    graph_fault(system, kind="fail_after_write", mailbox=mailbox, method="POST", count=1)
    before = graph_routes(system)
    failed = jobs.queue("exsync", redis_conn).failed_job_registry
    coconut = CoconutAdmin(system)
    day = next_weekday(11)
    appt = coconut.book(local(day, 10).isoformat(), staff_id=1)
    coconut.http.close()

    key = f"exsync:projection:appointment:{appt}"
    wait_until(settled(redis_conn, key, failed), 60, what="the mapping, or a failed job")
    wait_quiet(redis_conn)
    assert failed.count == 0, system.logs()[-4000:]
    (event,) = marked_events(system, USER1, mark(appt))
    (projection,) = [json.loads(v) for v in redis_conn.hvals(key)]
    assert projection["event_id"] == event["id"], "the one event, adopted"
    assert projection["change_key"] == event["changeKey"], "its update recorded: echo known"
    assert projection["digest"], "brought to the draft"
    sent = graph_routes(system) - before
    assert sent[CREATE] == 2, "the create, and its retry refused as a repeated transactionId"
    assert sent["PATCH /v1.0/users/<user>/events/<event_id>"] == 1


def test_a_lost_mapping_of_a_deleted_event_makes_it_again_with_the_next_generation(
    make_system,  # type: ignore[no-untyped-def]
    redis_conn: redis.Redis,
) -> None:
    # Redis lost, and the staff member deleted the event: the item's job finds no mark, creates
    # with generation 0's transactionId again, and Graph refuses it with nothing to adopt.
    system = make_system(graph_args=["--users", "3"], settings=NO_RETRIES)
    mailbox = user_id(system, USER1)
    failed = jobs.queue("exsync", redis_conn).failed_job_registry
    coconut = CoconutAdmin(system)
    appt = coconut.book(local(next_weekday(12), 10).isoformat(), staff_id=1)
    key = f"exsync:projection:appointment:{appt}"
    wait_until(settled(redis_conn, key, failed), 60, what="the first event")
    (first,) = marked_events(system, USER1, mark(appt))
    with system.graph_http() as http:
        http.delete(f"/_emulator/users/{USER1}/events/{first['id']}").raise_for_status()
    redis_conn.delete(key, f"exsync:projected:{mailbox}")
    before = graph_routes(system)

    coconut.change(appt, notes="changed after the loss")
    coconut.http.close()
    wait_until(settled(redis_conn, key, failed), 60, what="the mapping, or a failed job")
    wait_quiet(redis_conn)
    assert failed.count == 0, system.logs()[-4000:]
    (event,) = marked_events(system, USER1, mark(appt))
    (projection,) = [json.loads(v) for v in redis_conn.hvals(key)]
    assert event["id"] != first["id"] and projection["event_id"] == event["id"]
    assert projection["generation"] == 1
    assert graph_routes(system)[CREATE] - before[CREATE] == 2, "refused once, then made"


def test_creates_retried_inside_the_initial_syncs_batch_adopt_their_events(
    make_system,  # type: ignore[no-untyped-def]
    redis_conn: redis.Redis,
) -> None:
    system = make_system(
        graph_args=["--users", "3"], coconut_args=["--bookings-per-staff", "6"],
        settings=NO_RETRIES,
    )  # fmt: skip
    want = expected(system)
    mailbox = user_id(system, USER1)
    graph_fault(system, kind="fail_after_write", mailbox=mailbox, method="POST", count=3)
    before = graph_routes(system)
    reads = appointment_reads(system)
    failed = jobs.queue("exsync", redis_conn).failed_job_registry

    assert "initial sync queued" in run_cli(system, "initial-sync")
    wait_until(lambda: set(projected(system)) >= want or failed.count > 0, 90,
               what="every item projected, or a failed job")  # fmt: skip
    wait_quiet(redis_conn, 60)
    assert failed.count == 0, system.logs()[-4000:]
    counts = projected(system)
    assert set(counts) == want and set(counts.values()) == {1}, "one event per item"
    assert appointment_reads(system) == reads, "no item was handed to its own job"
    sent = graph_routes(system) - before
    assert sent[CREATE] - len(want) == 3, "three creates sent again, refused, not made twice"
    events = system.graph_state()["events"][mailbox]
    mapped = {
        event_id.decode(): json.loads(raw)
        for event_id, raw in redis_conn.hgetall(f"exsync:projected:{mailbox}").items()
    }
    ours = {e["id"]: e for e in events if mark_of(e)}
    assert set(mapped) == set(ours), "every event mapped, the adopted ones too"
    for event_id, projection in mapped.items():
        assert projection["change_key"] == ours[event_id]["changeKey"] and projection["digest"]
