"""One truth on every screen: the User Accounts tab (tiles and rows), the admin API and `exsync
status` read the connection's state, the items Coconut refused and the full reconciliations from
one function, so a disconnected service never shows "Syncing" and a refused item never hides."""

from __future__ import annotations

import json
import re
import time

import pytest
import redis
from werkzeug.test import TestResponse

from core import connection, progress, reconcile, refusals, store
from tests.cli_support import invoke
from tests.test_admin_support import (
    STAFF,
    TENANT,
    Browser,
    a_staff_member,
    connect,
    make_accounts,
    make_app,
    save_connection,
)

# An environment-only setup, as the demo runs: the app registration in the settings.
ENVIRONMENT = {"tenant_id": TENANT, "client_id": "demo-app", "client_secret": "demo-secret"}
ENVIRONMENT_VARS = {f"EXSYNC_{k.upper()}": v for k, v in ENVIRONMENT.items()}
DENTIST = "busy block 'Dentist' on 2026-12-09 (UTC)"


@pytest.fixture
def admin(redis_url: str, redis_conn: redis.Redis) -> Browser:
    make_accounts(redis_conn)
    browser = Browser(make_app(redis_url))
    browser.sign_in()
    return browser


@pytest.fixture
def three_staff(redis_conn: redis.Redis) -> None:
    a_staff_member(redis_conn, "1", "ann@bank.example", "u-1")
    a_staff_member(redis_conn, "2", "bob@bank.example", "u-2")
    a_staff_member(redis_conn, "3", "cy@bank.example", "u-3")
    a_staff_member(redis_conn, "4", "front@bank.example", takes_appointments=False)


def tile(page: TestResponse, state: str) -> int:
    found = re.search(
        rf'id="tile-{state}".*?<span class="count">(\d+)</span>', page.get_data(as_text=True), re.S
    )
    assert found, f"no {state} tile"
    return int(found.group(1))


def row_html(page: TestResponse, staff_id: str) -> str:
    text = page.get_data(as_text=True)
    found = re.search(rf'<tr class="[^"]*" data-staff="{staff_id}">(.*?)</tr>', text, re.S)
    assert found, f"no row for staff {staff_id}"
    return found.group(1)


def cli_status(redis_url: str, **env: str) -> tuple[int, dict]:
    done = invoke(redis_url, "status", "--json", env=env)
    return done.exit_code, json.loads(done.stdout)


def test_after_disconnect_tiles_rows_api_and_cli_all_say_disconnected(
    admin: Browser, redis_url: str, redis_conn: redis.Redis, three_staff: None
) -> None:
    connect(redis_conn)
    page = admin.get("/admin/exchange/users")
    assert tile(page, "syncing") == 3
    assert "tile-not_connected" not in page.get_data(as_text=True)
    code, status = cli_status(redis_url)
    assert (code, status["connection"], status["syncing"]) == (0, "connected", True)

    admin.get("/admin/exchange/disconnect")
    answer = admin.post("/admin/exchange/disconnect", {"confirm": "yes"})
    assert answer.status_code == 303
    connection.mark_disconnected(redis_conn)  # what the disconnect job does once it is done

    page = admin.get("/admin/exchange/users")
    text = page.get_data(as_text=True)
    assert tile(page, "syncing") == 0
    assert tile(page, "not_connected") == 3
    assert re.search(r'id="connection-state"[^>]*>\s*<strong>Disconnected\.</strong>', text)
    for staff_id in ("1", "2", "3"):
        assert "Not connected" in row_html(page, staff_id)
        assert "Syncing" not in row_html(page, staff_id)

    api = admin.client.get("/admin/api/users").get_json()
    assert api["connection"]["state"] == "disconnected" and not api["connection"]["syncing"]
    assert api["counts"]["syncing"] == 0 and api["counts"]["not_connected"] == 3

    code, status = cli_status(redis_url)
    assert code == 1, "nothing syncs: the operator must act"
    assert (status["connection"], status["syncing"]) == ("disconnected", False)
    assert status["counts"] == api["counts"]
    assert {u["staff_id"]: u["state"] for u in status["users"]} == {
        u["staff_id"]: u["state"] for u in api["users"]
    }
    text_out = invoke(redis_url, "status").stdout
    assert text_out.startswith("connection: disconnected")
    assert "syncing 0   warnings 0   errors 0   not connected 3" in text_out


def test_a_saved_configuration_never_authorized_reads_the_same_in_the_ui_and_the_cli(
    admin: Browser, redis_url: str, redis_conn: redis.Redis, three_staff: None
) -> None:
    """A saved wrong tenant showed "Not connected yet" in the UI and "3 syncing" in the CLI."""
    save_connection(redis_conn, tenant_id="wrong.example")
    page = admin.get("/admin/exchange/users")
    assert "Not connected yet" in page.get_data(as_text=True)
    assert tile(page, "syncing") == 0 and tile(page, "not_connected") == 3
    code, status = cli_status(redis_url)
    assert code == 1
    assert status["connection"] == "not_connected"
    assert status["counts"]["syncing"] == 0 and status["counts"]["not_connected"] == 3
    assert "Not connected yet" in status["connection_detail"]
    front = next(u for u in status["users"] if u["staff_id"] == "4")
    assert front["state"] == "not_synced", "who takes no appointments stays a plain note"


def test_the_configuration_tab_never_says_not_configured_above_a_filled_form(
    admin: Browser, redis_conn: redis.Redis
) -> None:
    connect(redis_conn)
    admin.get("/admin/exchange/disconnect")
    admin.post("/admin/exchange/disconnect", {"confirm": "yes"})
    page = admin.get("/admin/exchange").get_data(as_text=True)
    assert "Not configured" not in page
    assert re.search(r'id="connection-state"[^>]*>\s*<p><strong>Disconnecting\.</strong>', page)
    assert '<meta http-equiv="refresh"' in page, "it updates itself until the job is done"
    assert f'value="{TENANT}"' in page

    connection.mark_disconnected(redis_conn)
    page = admin.get("/admin/exchange").get_data(as_text=True)
    assert "Not configured" not in page
    assert "<strong>Disconnected.</strong>" in page and 'id="authorize"' in page
    assert f'value="{TENANT}"' in page


def test_the_demos_environment_connection_shows_on_the_configuration_tab(
    redis_url: str, redis_conn: redis.Redis, three_staff: None
) -> None:
    """The demo connects through EXSYNC_TENANT_ID, _CLIENT_ID and _CLIENT_SECRET and syncs."""
    make_accounts(redis_conn)
    browser = Browser(make_app(redis_url, **ENVIRONMENT))
    browser.sign_in()
    page = browser.get("/admin/exchange").get_data(as_text=True)
    assert "Not configured" not in page
    assert "Connected through the environment settings" in page
    assert "demo-app" in page and TENANT in page
    users = browser.get("/admin/exchange/users")
    assert tile(users, "syncing") == 3
    code, status = cli_status(redis_url, **ENVIRONMENT_VARS)
    assert (code, status["connection"]) == (0, "environment")

    bare = Browser(make_app(redis_url))
    bare.sign_in()
    assert "<strong>Not configured.</strong>" in bare.get("/admin/exchange").get_data(as_text=True)


def test_a_refused_item_shows_in_plain_words_as_a_warning_until_it_is_cleared(
    admin: Browser, redis_url: str, redis_conn: redis.Redis, three_staff: None
) -> None:
    connect(redis_conn)
    reason = "Coconut answered 404: no absences with id 3"
    refusals.record(redis_conn, "u-2", "ev-1", label=DENTIST, reason=reason, status=404)
    page = admin.get("/admin/exchange/users")
    assert tile(page, "warning") == 1 and tile(page, "syncing") == 2
    bob = row_html(page, "2")
    assert "Warning" in bob and "Coconut refused 1 item(s)" in bob
    assert f"{DENTIST} was refused: {reason}".replace("'", "&#39;") in bob

    api = admin.client.get("/admin/api/users").get_json()
    refused = next(u for u in api["users"] if u["staff_id"] == "2")["refused"]
    assert [(r["text"], r["status"], r["attempts"]) for r in refused] == [
        (f"{DENTIST} was refused: {reason}", 404, 1)
    ]
    code, status = cli_status(redis_url)
    assert code == 1, "Coconut refused an item"
    assert next(u for u in status["users"] if u["staff_id"] == "2")["refused"] == refused
    assert f"refused: {DENTIST} was refused: {reason}" in invoke(redis_url, "status").stdout

    refusals.record(redis_conn, "u-2", "ev-1", label=DENTIST, reason=reason, status=404)
    assert "tried 2 time(s)" in row_html(admin.get("/admin/exchange/users"), "2")

    refusals.clear(redis_conn, "u-2", {"ev-1"})
    page = admin.get("/admin/exchange/users")
    assert tile(page, "warning") == 0 and tile(page, "syncing") == 3
    assert "refused" not in row_html(page, "2")
    assert cli_status(redis_url)[0] == 0


def test_a_mailbox_in_error_with_a_refused_item_stays_an_error(
    admin: Browser, redis_conn: redis.Redis, three_staff: None
) -> None:
    connect(redis_conn)
    redis_conn.hset(store.staff_key("1"), "error", "Exchange refused access (403)")
    refusals.record(redis_conn, "u-1", "ev-9", label=DENTIST, reason="too long", status=422)
    page = admin.get("/admin/exchange/users")
    assert tile(page, "error") == 1 and tile(page, "warning") == 0
    assert "too long" in row_html(page, "1")


def test_rows_say_when_the_last_full_reconciliation_finished_and_what_it_repaired(
    admin: Browser, redis_url: str, redis_conn: redis.Redis, three_staff: None
) -> None:
    connect(redis_conn)
    assert "reconciliation" not in row_html(admin.get("/admin/exchange/users"), "1")

    reconcile.mark(redis_conn, "u-1", "resync")
    assert "full reconciliation requested" in row_html(admin.get("/admin/exchange/users"), "1")
    redis_conn.set(store.lock_key("mailbox", "u-1"), "worker")  # a round of the mailbox runs
    page = admin.get("/admin/exchange/users")
    assert "full reconciliation running" in row_html(page, "1")
    assert '<meta http-equiv="refresh"' in page.get_data(as_text=True)

    finished = time.time()
    redis_conn.delete(store.lock_key("mailbox", "u-1"))
    redis_conn.hdel(store.mailbox_key("u-1"), reconcile.REQUESTED)
    redis_conn.hset(
        store.mailbox_key("u-1"),
        mapping={"reconciled_at": finished, "repaired": json.dumps({"made": 2, "removed": 1})},
    )
    row = row_html(admin.get("/admin/exchange/users"), "1")
    assert "last full reconciliation finished" in row
    assert "2 busy block(s) made, 1 busy block(s) removed" in row

    api = admin.client.get("/admin/api/users").get_json()
    ann = next(u for u in api["users"] if u["staff_id"] == "1")
    assert ann["reconciled_at"] == int(finished) and ann["reconcile"] == ""
    assert ann["repaired"] == "2 busy block(s) made, 1 busy block(s) removed"
    text = invoke(redis_url, "status").stdout
    assert "last full reconciliation finished" in text and "1 busy block(s) removed" in text


@pytest.mark.parametrize("manual", [False, True])
def test_enabled_says_whether_the_staff_member_is_synced(
    redis_url: str, redis_conn: redis.Redis, three_staff: None, manual: bool
) -> None:
    connect(redis_conn)
    make_accounts(redis_conn)
    redis_conn.sadd("exsync:enabled_staff", "2")
    browser = Browser(make_app(redis_url, manual_user_sync=manual))
    browser.sign_in()
    rows = {u["staff_id"]: u for u in browser.client.get("/admin/api/users").get_json()["users"]}
    assert rows["1"]["state"] == "syncing"
    assert rows["1"]["enabled"] is (not manual)
    assert rows["2"]["enabled"] is True
    assert rows["4"]["enabled"] is False, "takes no appointments: nothing is synced"


def test_the_user_accounts_page_explains_itself_and_keeps_its_table_in_its_card(
    admin: Browser, redis_conn: redis.Redis, three_staff: None
) -> None:
    connect(redis_conn)
    page = admin.get("/admin/exchange/users")
    text = page.get_data(as_text=True)
    front = row_html(page, "4")
    assert '<span class="note">does not take appointments in Coconut</span>' in front
    assert 'class="problem"' not in front
    legend = re.search(r'id="items-legend">(.*?)</p>', text, re.S)
    assert legend and "Coconut → Exchange" in legend.group(1)
    assert "Exchange → Coconut" in legend.group(1)
    assert re.search(r'<div class="table-scroll">\s*<table class="users"', text)
    with admin.client.get("/static/admin.css") as stylesheet:
        css = stylesheet.get_data(as_text=True)
    assert re.search(r"\.table-scroll \{[^}]*overflow-x: auto", css)


def test_the_admins_only_page_tells_a_teller_to_ask_an_admin(
    redis_url: str, redis_conn: redis.Redis
) -> None:
    make_accounts(redis_conn)
    teller = Browser(make_app(redis_url))
    teller.sign_in(STAFF)
    page = teller.get("/admin/exchange")
    text = page.get_data(as_text=True)
    assert page.status_code == 403
    assert "ask one of your admins to give" in text
    assert "exsync" not in text.replace("exsync_admin", "")
    assert 'href="/admin/exchange"' not in text, "no link back to the page that refused"


def test_an_initial_sync_stuck_on_a_refused_item_names_it_in_its_banner(
    admin: Browser, redis_conn: redis.Redis, three_staff: None
) -> None:
    connect(redis_conn)
    redis_conn.hset(progress.RUN_KEY, mapping={"state": "queued", "staff": "2"})
    redis_conn.sadd(
        store.initial_sync_items_key("2"), "initial_item:2-appointment-5", "mailbox:u-2"
    )
    redis_conn.set(store.dirty_key("mailbox", "u-2"), 1)  # its round has not completed
    reason = "Coconut answered 422: longer than 14 days"
    refusals.record(redis_conn, "u-2", "ev-1", label=DENTIST, reason=reason, status=422)
    page = admin.get("/admin/exchange/users").get_data(as_text=True)
    banner = page[page.index('id="initial-sync"') :].split("</section>", 1)[0]
    assert "1 of 2 items" in banner
    assert f"{DENTIST} was refused: {reason}".replace("'", "&#39;") in banner
