"""The initial sync: every existing upcoming appointment and Coconut absence reaches Outlook once,
and running it again (a resumed crash, a second Authorize) doubles nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter

import httpx
import redis

from exsync.admin_users import add_token
from tests.harness import System, wait_until
from tests.sync_support import CoconutAdmin, mark_of


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
    get = coconut.http.get
    try:
        staff = {
            int(u["id"]): u["attributes"]["email"]
            for u in coconut.http.get("/api/v2/b2b/users").json()["data"]
            if u["attributes"]["takes_appointments"]
            and u["attributes"]["email"] != "nomailbox@contoso.example"
        }
        wanted = set()
        for a in get("/api/v2/b2b/appointments", params={"limit": 100}).json()["data"]:
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
