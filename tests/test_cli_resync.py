"""`exsync resync USER|--all` queues staff members' resync through the webhooks' own jobs and
returns when those jobs, and the ones they start (the mailbox match, each appointment and
absence), are done: a progress bar in a terminal, exit 0 done, 1 a job failed or the wait timed
out, 2 an unknown staff member."""

from __future__ import annotations

import json

import redis

from core import jobs, refusals, store
from core.staff_status import ROSTER_KEY
from tests.cli_support import invoke, run, run_in_terminal
from tests.harness import System
from tests.sync_support import CoconutAdmin, mark_of, user_id
from tests.test_initial_sync import expected

GRAPH_USERS = ["--users", "3"]


def roster_from_coconut(system: System, conn: redis.Redis) -> dict[str, int]:
    """Write the roster as the workers would (the CLI resolves staff from it): email -> id."""
    coconut = CoconutAdmin(system)
    try:
        users = coconut.http.get("/api/v2/b2b/users").raise_for_status().json()["data"]
    finally:
        coconut.http.close()
    staff = {}
    for user in users:
        attrs = user["attributes"]
        person = {"name": f"{attrs['first_name']} {attrs['last_name']}", "email": attrs["email"],
                  "takes_appointments": attrs["takes_appointments"]}  # fmt: skip
        conn.hset(ROSTER_KEY, user["id"], json.dumps(person))
        staff[attrs["email"]] = int(user["id"])
    return staff


def marks_in(system: System, address: str) -> set[str]:
    events = system.graph_state()["events"].get(user_id(system, address), [])
    return {mark for e in events if (mark := mark_of(e))}


def seed_roster(conn: redis.Redis, *emails: str) -> None:
    for index, email in enumerate(emails, start=1):
        person = {"name": f"Staff {index}", "email": email, "takes_appointments": True}
        conn.hset(ROSTER_KEY, str(index), json.dumps(person))


def test_resync_of_one_staff_member_returns_when_their_appointments_are_in_outlook(
    make_system,
    redis_conn: redis.Redis,  # type: ignore[no-untyped-def]
) -> None:
    system = make_system(graph_args=GRAPH_USERS)
    roster_from_coconut(system, redis_conn)
    wanted = {mark for address, mark in expected(system) if address == "user1@contoso.example"}
    assert len(wanted) >= 2, wanted
    assert marks_in(system, "user1@contoso.example") == set(), "nothing synced before"

    done = run(system.env, "resync", "user1@contoso.example", timeout=180)
    assert done.returncode == 0, done.stderr
    jobs_done = int(done.stdout.strip().rsplit("resync done: ", 1)[1].split()[0])
    assert jobs_done >= 2 + len(wanted), done.stdout  # staff, mailbox match, mailbox, items
    # No waiting afterwards: the command returned once the work was done.
    assert marks_in(system, "user1@contoso.example") >= wanted
    assert redis_conn.hget(store.staff_key("1"), "user_id") is not None, "mailbox matched"


def test_resync_all_shows_a_progress_bar_in_a_terminal(make_system, redis_conn) -> None:  # type: ignore[no-untyped-def]
    system = make_system(graph_args=GRAPH_USERS)
    staff = roster_from_coconut(system, redis_conn)
    code, shown = run_in_terminal(system.env, "resync", "--all", "--timeout", "170", timeout=180)
    assert code == 0, shown
    assert f"resync {len(staff)} staff member(s)" in shown
    assert "[####" in shown, "the bar filled up"
    assert "resync done: " in shown
    for address, _ in expected(system):
        assert marks_in(system, address), f"{address} was resynced too"


def test_a_failed_job_makes_resync_exit_1_and_says_where_to_look(make_system, redis_conn) -> None:  # type: ignore[no-untyped-def]
    system = make_system(graph_args=GRAPH_USERS)
    roster_from_coconut(system, redis_conn)
    with system.coconut_http() as http:
        armed = http.post("/_emulator/faults/api_error", json={"status": 500, "count": 100})
        assert armed.status_code < 300, armed.text
    env = {**system.env, "EXSYNC_JOB_RETRIES": "0"}  # the jobs this command queues fail at once
    done = run(env, "resync", "user1@contoso.example", "--timeout", "15", timeout=60)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "job(s) failed: " in done.stderr and "staff-" in done.stderr
    assert "exsync failed list" in done.stderr


def test_resync_no_wait_queues_the_jobs_and_returns(
    redis_url: str, redis_conn: redis.Redis
) -> None:
    seed_roster(redis_conn, "ann@bank.example", "bob@bank.example")
    redis_conn.hset(store.staff_key("2"), mapping={"user_id": "u-2", "address": "bob@bank.example"})
    done = invoke(redis_url, "resync", "BOB@bank.example", "--no-wait")
    assert done.exit_code == 0, done.output
    assert done.stdout == "queued 3 job(s) for 1 staff member(s)\n"
    assert sorted(jobs.queue("exsync", redis_conn).get_job_ids()) == [
        "mailbox-u-2",
        "staff-2",
        "staff_items-2",
    ]


def test_resync_finds_staff_by_coconut_id_and_graph_user_id(redis_url: str, redis_conn) -> None:  # type: ignore[no-untyped-def]
    seed_roster(redis_conn, "ann@bank.example", "bob@bank.example")
    redis_conn.hset(store.staff_key("2"), mapping={"user_id": "u-2", "address": "bob@bank.example"})
    assert invoke(redis_url, "resync", "1", "--no-wait").exit_code == 0
    assert invoke(redis_url, "resync", "u-2", "--no-wait").exit_code == 0
    assert sorted(jobs.queue("exsync", redis_conn).get_job_ids()) == [
        "mailbox-u-2", "staff-1", "staff-2", "staff_items-1", "staff_items-2"
    ]  # fmt: skip


def test_an_unknown_staff_member_is_bad_usage(redis_url: str, redis_conn: redis.Redis) -> None:
    seed_roster(redis_conn, "ann@bank.example")
    done = invoke(redis_url, "resync", "nobody@bank.example")
    assert done.exit_code == 2
    assert "no staff member on the roster (1 listed" in done.stderr
    assert jobs.queue("exsync", redis_conn).count == 0


def test_resync_all_with_an_empty_roster_exits_1(redis_url: str) -> None:
    done = invoke(redis_url, "resync", "--all")
    assert done.exit_code == 1
    assert "run `exsync initial-sync` first" in done.stderr


def test_resync_gives_up_after_its_timeout_when_no_worker_runs(
    redis_url: str, redis_conn: redis.Redis
) -> None:
    seed_roster(redis_conn, "ann@bank.example")
    done = invoke(redis_url, "resync", "ann@bank.example", "--timeout", "1")
    assert done.exit_code == 1
    assert "2 job(s) still waiting after 1 s (no worker is running): staff-1, staff_items-1" in (
        done.stderr
    )


def test_resync_of_a_stuck_mailbox_names_the_item_coconut_refused(
    redis_url: str, redis_conn: redis.Redis
) -> None:
    seed_roster(redis_conn, "ann@bank.example")
    redis_conn.hset(store.staff_key("1"), mapping={"user_id": "u-1", "address": "ann@bank.example"})
    refusals.record(redis_conn, "u-1", "ev-1", label="busy block 'Parental leave' on 2026-12-15",
                    reason="Coconut answered 422: longer than 14 days", status=422)  # fmt: skip
    done = invoke(redis_url, "resync", "ann@bank.example", "--timeout", "1")
    assert done.exit_code == 1
    assert "busy block 'Parental leave' on 2026-12-15 was refused: Coconut answered 422" in (
        done.stderr
    )
