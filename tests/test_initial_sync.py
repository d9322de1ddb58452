"""The initial sync: every existing upcoming appointment and Coconut absence reaches Outlook once,
and running it again (a resumed crash, a second Authorize) doubles nothing.

The bulk tests seed Coconut with more bookings at start (`--bookings-per-staff`, no webhook for
any), so every event in Outlook is the initial sync's work, written per mailbox in `$batch`
calls; the Graph emulator's request counters show how.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime
from typing import Any

import httpx
import redis

from core import jobs
from core.admin_accounts import add_token
from tests.harness import System, wait_until
from tests.sync_support import CoconutAdmin, graph_fault, mark_of, marked_events, user_id, utc


def projected(system: System) -> Counter[tuple[str, str]]:
    """(mailbox address, mark) -> how many events carry it."""
    state = system.graph_state()
    address = {u["id"]: u["mail"] for u in state["users"]}
    return Counter(
        (address[uid], mark_of(e))
        for uid, events in state["events"].items()
        for e in events
        if mark_of(e)
    )


def expected(system: System) -> set[tuple[str, str]]:
    """What Coconut says should be in Outlook: live appointments per assigned staff member with a
    mailbox, and Coconut-made absences."""
    coconut = CoconutAdmin(system)
    try:
        staff = {
            int(u["id"]): u["attributes"]["email"]
            for u in coconut.http.get("/api/v2/b2b/users").json()["data"]
            if u["attributes"]["takes_appointments"]
            and u["attributes"]["email"] != "nomailbox@contoso.example"
        }
        wanted = set()
        for a in every(coconut, "/api/v2/b2b/appointments"):
            attrs = a["attributes"]
            if attrs["status"] == "cancelled":
                continue
            for sid in [attrs["staff_id"], *(attrs.get("additional_staff_id") or [])]:
                if sid in staff:
                    wanted.add((staff[sid], f"exsync:appointment:{a['id']}"))
        for b in coconut.http.get(
            "/api/v2/b2b/absences", params={"filter[source]": "coconut"}
        ).json()["data"]:
            wanted.add((staff[b["attributes"]["user_id"]], f"exsync:absence:{b['id']}"))
        return wanted
    finally:
        coconut.http.close()


def every(coconut: CoconutAdmin, path: str) -> list[dict[str, Any]]:
    """Every record of a Coconut collection, following `links.next`."""
    rows: list[dict[str, Any]] = []
    url: str | None = path
    params: dict[str, Any] | None = {"limit": 100}
    while url:
        page = coconut.http.get(url, params=params).raise_for_status().json()
        rows += page["data"]
        url, params = page["links"]["next"], None
    return rows


def run_cli(system: System, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "exsync.cli", *args], env=system.env, capture_output=True,
        text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode in (0, 1), done.stderr
    return done.stdout


def test_initial_sync_projects_everything_once_and_a_rerun_doubles_nothing(
    make_system,
    redis_conn: redis.Redis,  # type: ignore[no-untyped-def]
) -> None:
    system = make_system(workers=2, graph_args=["--users", "3"])
    want = expected(system)
    assert len(want) >= 8, want  # the seed books a few per staff member

    assert "initial sync queued" in run_cli(system, "initial-sync")
    wait_until(lambda: set(projected(system)) >= want, 60, what="every item projected")
    assert run_cli(system, "initial-sync")
    wait_until(
        lambda: not redis_conn.keys("exsync:dirty:appointment:*"), 60, what="the rerun to finish"
    )
    counts = projected(system)
    assert set(counts) == want
    assert set(counts.values()) == {1}, "nothing doubled"
    status = run_cli(system, "initial-sync", "--status")
    assert "user1@contoso.example" in status


def test_user_accounts_show_each_staff_member_in_coconuts_vocabulary(
    make_system,
    redis_conn: redis.Redis,  # type: ignore[no-untyped-def]
) -> None:
    system = make_system(graph_args=["--users", "3"])
    run_cli(system, "initial-sync")
    token = add_token(redis_conn, "test-users-tab")
    auth = {"Authorization": f"Bearer {token}"}

    def settled() -> dict | None:
        answer = httpx.get(f"{system.web_url}/admin/api/users", headers=auth, timeout=5).json()
        rows = {u["email"]: u for u in answer["users"]}
        user1 = rows.get("user1@contoso.example")
        return answer if user1 and user1["to_exchange"] >= 3 else None

    answer = wait_until(settled, 60, what="the User Accounts rows")
    rows = {u["email"]: u for u in answer["users"]}
    assert rows["user1@contoso.example"]["state"] == "syncing"
    assert rows["user1@contoso.example"]["mailbox"] == "user1@contoso.example"
    assert rows["nomailbox@contoso.example"]["state"] == "warning"
    assert (
        "no mailbox matches nomailbox@contoso.example"
        in rows["nomailbox@contoso.example"]["problem"]
    )
    assert rows["admin@contoso.example"]["state"] == "not_synced"
    assert answer["counts"]["warning"] == 1 and answer["counts"]["syncing"] == 3

    assert httpx.get(f"{system.web_url}/admin/api/users", timeout=5).status_code == 401
    page = httpx.get(f"{system.web_url}/admin/exchange/users?state=warning", headers=auth)
    assert page.status_code == 200
    assert "Nora Nomailbox" in page.text and "user1@contoso.example" not in page.text


def test_exsync_status_lists_the_same_rows(make_system) -> None:  # type: ignore[no-untyped-def]
    system = make_system(graph_args=["--users", "3"])
    run_cli(system, "initial-sync")
    wait_until(lambda: "user3@contoso.example" in run_cli(system, "status"), 60, what="rows")
    done = subprocess.run(
        [sys.executable, "-m", "exsync.cli", "status", "--json"], env=system.env,
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr  # no staff member in error
    status = json.loads(done.stdout)
    assert status["counts"]["warning"] == 1
    assert {u["email"] for u in status["users"]} >= {
        "user1@contoso.example",
        "admin@contoso.example",
    }


def test_an_admin_matches_a_staff_member_to_another_mailbox(
    make_system,
    redis_conn: redis.Redis,  # type: ignore[no-untyped-def]
) -> None:
    system = make_system(graph_args=["--users", "3"])
    with system.graph_http() as http:
        http.post("/_emulator/users", json={"mail": "nora.n@contoso.example"}).raise_for_status()
    run_cli(system, "initial-sync")
    auth = {"Authorization": f"Bearer {add_token(redis_conn, 'test-override')}"}

    def nora() -> dict:
        rows = httpx.get(f"{system.web_url}/admin/api/users", headers=auth, timeout=5).json()
        return next((u for u in rows["users"] if u["email"] == "nomailbox@contoso.example"), {})

    wait_until(lambda: nora().get("state") == "warning", 60, what="Nora's warning")
    staff_id = nora()["staff_id"]
    answer = httpx.post(
        f"{system.web_url}/admin/exchange/users/{staff_id}/mailbox",
        data={"address": "nora.n@contoso.example"}, headers=auth,
    )  # fmt: skip
    assert answer.status_code == 303
    wait_until(lambda: nora().get("state") == "syncing", 60, what="Nora matched")
    assert nora()["mailbox"] == "nora.n@contoso.example"
    wait_until(lambda: nora().get("subscription") == "live", 30, what="her mailbox subscribed")
    refused = httpx.post(
        f"{system.web_url}/admin/exchange/users/{staff_id}/mailbox",
        data={"address": "not an address"}, headers=auth,
    )  # fmt: skip
    assert refused.status_code == 303 and nora()["mailbox"] == "nora.n@contoso.example"


def test_with_manual_user_syncing_only_enabled_staff_sync(
    make_system,
    redis_conn: redis.Redis,  # type: ignore[no-untyped-def]
) -> None:
    system = make_system(graph_args=["--users", "3"], settings={"EXSYNC_MANUAL_USER_SYNC": "true"})
    run_cli(system, "initial-sync")
    auth = {"Authorization": f"Bearer {add_token(redis_conn, 'test-manual')}"}

    def rows() -> dict[str, dict]:
        answer = httpx.get(f"{system.web_url}/admin/api/users", headers=auth, timeout=5).json()
        return {u["email"]: u for u in answer["users"]}

    wait_until(lambda: "user1@contoso.example" in rows(), 60, what="the roster")
    user1 = rows()["user1@contoso.example"]
    assert user1["state"] == "warning" and "not enabled" in user1["problem"]
    assert not any(projected(system)), "nothing syncs before an admin enables someone"

    answer = httpx.post(f"{system.web_url}/admin/exchange/users/{user1['staff_id']}/enabled",
                        data={"enabled": "on"}, headers=auth)  # fmt: skip
    assert answer.status_code == 303
    wait_until(lambda: rows()["user1@contoso.example"]["to_exchange"] >= 3, 60, what="user1")
    mailboxes = {address for address, _ in projected(system)}
    assert mailboxes == {"user1@contoso.example"}
    assert rows()["user2@contoso.example"]["state"] == "warning"


# ---------------------------------------------------------------- the bulk path, per mailbox

BOOKINGS = 45  # per staff member, beside the seed: three batches for each mailbox


def bulk_system(make_system, workers: int = 2) -> System:  # type: ignore[no-untyped-def]
    return make_system(
        workers=workers, graph_args=["--users", "3"],
        coconut_args=["--bookings-per-staff", str(BOOKINGS)],
    )  # fmt: skip


def requests_now(system: System) -> dict[str, Any]:
    with system.graph_http() as http:
        return http.get("/_emulator/summary").raise_for_status().json()["counters"]  # type: ignore[no-any-return]


def routes(before: dict[str, Any], after: dict[str, Any]) -> Counter[str]:
    """Requests per route between two readings of the counters."""
    return Counter(after["requests"]) - Counter(before["requests"])


def sync_quietly(system: System, conn: redis.Redis, want: set[tuple[str, str]]) -> None:
    """Run the initial sync and wait until everything is projected and no job is left."""
    assert "initial sync queued" in run_cli(system, "initial-sync")
    wait_until(lambda: set(projected(system)) >= want, 120, what="every item projected")
    queue = jobs.queue("exsync", conn)
    wait_until(lambda: queue.count == 0 and queue.started_job_registry.count == 0, 60,
               what="the queue to drain")  # fmt: skip


def per_mailbox(want: set[tuple[str, str]]) -> Counter[str]:
    return Counter(address for address, _ in want)


def test_an_initial_sync_writes_each_item_once_per_mailbox_in_batches(
    make_system,
    redis_conn: redis.Redis,  # type: ignore[no-untyped-def]
) -> None:
    system = bulk_system(make_system)
    want = expected(system)
    assert per_mailbox(want)["user1@contoso.example"] > BOOKINGS
    before = requests_now(system)

    sync_quietly(system, redis_conn, want)

    counts = projected(system)
    assert set(counts) == want and set(counts.values()) == {1}, "each item once per mailbox"
    sent = routes(before, requests_now(system))
    assert sent["POST /v1.0/users/<user>/events"] == len(want), "one create per event"
    batches = sum(math.ceil(n / 20) for n in per_mailbox(want).values())
    assert sent["POST /v1.0/$batch"] == batches, "creates go 20 to a batch"
    # One listing of our marks per mailbox for the projection, and one per full round of its
    # busy time (a second full round when a notification's round began before Authorize's).
    assert 6 <= sent["GET /v1.0/users/<user>/events"] <= 9, "listings per mailbox, no look-ups"
    assert requests_now(system)["batched"] - before["batched"] == len(want)

    coconut = CoconutAdmin(system)
    booking = every(coconut, "/api/v2/b2b/appointments")[-1]  # a bulk-seeded one of staff 3
    coconut.http.close()
    (event,) = marked_events(system, "user3@contoso.example", f"exsync:appointment:{booking['id']}")
    attrs = booking["attributes"]
    assert utc(event["start"]) == datetime.fromisoformat(attrs["start"])
    assert utc(event["end"]) == datetime.fromisoformat(attrs["end"])
    assert event["subject"] == "Mortgage consultation with Ada Lovelace"
    assert f"/appointments/{booking['id']}" in event["body"]["content"]
    assert event["transactionId"] and event["showAs"] == "busy" and event["attendees"] == []
    mailbox = user_id(system, "user3@contoso.example")
    stored = redis_conn.hget(f"exsync:projected:{mailbox}", event["id"])
    assert stored and json.loads(stored)["change_key"] == event["changeKey"], "echo is known"


def test_a_lost_mapping_is_rebuilt_from_our_marks_and_nothing_is_created_twice(
    make_system,
    redis_conn: redis.Redis,  # type: ignore[no-untyped-def]
) -> None:
    system = bulk_system(make_system)
    want = expected(system)
    sync_quietly(system, redis_conn, want)
    for pattern in ("exsync:projection:*", "exsync:projected:*"):
        redis_conn.delete(*redis_conn.keys(pattern))
    before = requests_now(system)

    sync_quietly(system, redis_conn, want)

    counts = projected(system)
    assert set(counts) == want and set(counts.values()) == {1}
    assert routes(before, requests_now(system))["POST /v1.0/users/<user>/events"] == 0
    for address in ("user1@contoso.example", "user2@contoso.example", "user3@contoso.example"):
        mailbox = user_id(system, address)
        events = system.graph_state()["events"][mailbox]
        ours = {e["id"] for e in events if mark_of(e)}
        mapped = {k.decode() for k in redis_conn.hkeys(f"exsync:projected:{mailbox}")}
        assert mapped == ours, f"{address}: every event mapped again, by its mark"


def test_a_worker_killed_mid_batch_leaves_each_event_once(
    make_system,
    redis_conn: redis.Redis,  # type: ignore[no-untyped-def]
) -> None:
    # The first create in user1's first batch is carried out, then its answer (and with it the
    # whole batch's) waits: the worker is killed knowing none of the batch's event ids.
    system = bulk_system(make_system, workers=1)
    want = expected(system)
    mailbox = user_id(system, "user1@contoso.example")
    graph_fault(system, kind="slow_response", seconds=30, mailbox=mailbox, count=1)
    run_cli(system, "initial-sync")
    wait_until(lambda: len(system.graph_state()["events"][mailbox]) >= 20, 60,
               what="user1's first batch carried out")  # fmt: skip
    system.kill("worker-0")
    system.start_worker(0)

    wait_until(lambda: set(projected(system)) >= want, 150, what="the retried sync")
    counts = projected(system)
    assert set(counts) == want and set(counts.values()) == {1}, "nothing doubled"
    assert jobs.queue("exsync", redis_conn).failed_job_registry.count == 0


def test_throttled_creates_inside_a_batch_are_retried_as_graph_asks(
    make_system,
    redis_conn: redis.Redis,  # type: ignore[no-untyped-def]
) -> None:
    system = bulk_system(make_system)
    want = expected(system)
    mailbox = user_id(system, "user2@contoso.example")
    graph_fault(system, kind="throttle", mailbox=mailbox, method="POST", retry_after=2, count=3)
    before = requests_now(system)
    started = time.monotonic()

    sync_quietly(system, redis_conn, want)

    counts = projected(system)
    assert set(counts) == want and set(counts.values()) == {1}, "nothing lost, nothing doubled"
    after = requests_now(system)
    assert after["throttled"] - before["throttled"] == 3
    sent = routes(before, after)
    assert sent["POST /v1.0/users/<user>/events"] == len(want) + 3, "the three, once more"
    assert 6 <= sent["GET /v1.0/users/<user>/events"] <= 9, "retried in the batch, not per item"
    assert time.monotonic() - started >= 2, "the retry waited as Retry-After asked"
    assert jobs.queue("exsync", redis_conn).failed_job_registry.count == 0
