"""The admin's whole experience in headless Chromium (Debian's, driven by Playwright): sign in,
fill the Configuration tab, Authorize at the Graph emulator's sign-in as the service account,
watch the initial sync finish on the User Accounts tab; and the wrong account refused by name.

Screenshots of the settings page and the User Accounts tab are saved under
test-artifacts/screenshots/ (or $EXSYNC_TEST_ARTIFACTS) on every run.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from playwright.sync_api import Browser, Page, expect, sync_playwright

from core import jobs
from core.admin_accounts import add_user
from tests.harness import GRAPH_CLIENT_ID, GRAPH_CLIENT_SECRET, TENANT, System, wait_until
from tests.sync_support import mark_of

ADMIN, PASSWORD = "it.admin@bank.example", "correct horse battery staple"
SERVICE_ACCOUNT = "sync@contoso.example"
ARTIFACTS = Path(os.environ.get("EXSYNC_TEST_ARTIFACTS", "test-artifacts")) / "screenshots"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("Debian's chromium is required (.ci/ensure-chromium installs it)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture
def system(make_system, redis_conn: redis.Redis) -> System:  # type: ignore[no-untyped-def]
    system = make_system(graph_args=["--users", "3"], cloud_override=True)
    with system.graph_http() as http:
        for mail in (SERVICE_ACCOUNT, "someone.else@contoso.example"):
            http.post("/_emulator/users", json={"mail": mail}).raise_for_status()
    add_user(redis_conn, ADMIN, PASSWORD)
    return system


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    # The emulator's certificate comes from its own CA, which this browser does not know.
    context = browser.new_context(ignore_https_errors=True, viewport={"width": 1280, "height": 900})
    yield context.new_page()
    context.close()


def sign_in_and_configure(page: Page, system: System, *, impersonation: bool) -> None:
    page.goto(f"{system.web_url}/admin")
    page.fill("#email", ADMIN)
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    expect(page.locator("h2", has_text="Tenant and cloud")).to_be_visible()
    page.fill("#tenant_id", TENANT)
    page.select_option("#cloud", "worldwide")
    page.check("#confirm_endpoints")
    expect(page.locator("#graph-endpoint")).to_have_text(f"{system.graph_base}/v1.0")
    page.fill("#display_name", "Branch Outlook")
    page.fill("#client_id", GRAPH_CLIENT_ID)
    page.fill("#client_secret", GRAPH_CLIENT_SECRET)
    page.fill("#service_account", SERVICE_ACCOUNT)
    page.set_checked("#impersonation", impersonation)
    page.check("#show_event_titles")
    page.click("form.card button.primary")
    expect(page.locator(".status")).to_contain_text("Not connected yet")


def authorize_as(page: Page, account: str) -> None:
    page.click("#authorize")
    page.click(f"button[name=user_id]:has-text('{account}')")


def test_an_admin_connects_exchange_and_watches_the_initial_sync(
    system: System, page: Page
) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    sign_in_and_configure(page, system, impersonation=True)
    page.screenshot(path=str(ARTIFACTS / "settings.png"), full_page=True)
    authorize_as(page, SERVICE_ACCOUNT)
    expect(page.locator(".status")).to_contain_text(f"Connected as {SERVICE_ACCOUNT}")

    page.click("text=User Accounts")
    expect(page.locator("#users thead")).to_contain_text("Branch Outlook")
    row = page.locator("tr[data-staff]", has_text="user1@contoso.example")
    expect(row).to_contain_text("Syncing", timeout=60_000)
    expect(page.locator("#initial-sync")).to_contain_text("finished", timeout=60_000)
    expect(page.locator("tr", has_text="nomailbox@contoso.example")).to_contain_text("Warning")
    expect(page.locator("#tile-warning .count")).to_have_text("1")
    page.screenshot(path=str(ARTIFACTS / "user-accounts.png"), full_page=True)

    events = system.graph_state()["events"]
    assert sum(1 for evs in events.values() for e in evs if mark_of(e)) >= 8

    page.click("#tile-warning")
    expect(page.locator("tr[data-staff]")).to_have_count(1)

    # Disconnect, removing what the sync made, after a confirmation that counts it exactly.
    wait_until(lambda: len(system.graph_state()["subscriptions"]) == 3, 30, what="subscriptions")
    page.click("text=Configuration")
    page.click("#disconnect")
    events = sum(1 for evs in system.graph_state()["events"].values() for e in evs if mark_of(e))
    blocks = [a for a in system.coconut_state()["absences"] if a["source"] == "external"]
    expect(page.locator("#count-events")).to_have_text(str(events))
    expect(page.locator("#count-blocks")).to_have_text(str(len(blocks)))
    page.check("#remove_items")
    page.check("#confirm")
    page.click("button.danger")
    expect(page.locator(".banner.ok")).to_contain_text("Disconnecting")

    def all_gone() -> bool:
        graph, coconut = system.graph_state(), system.coconut_state()
        ours = [e for evs in graph["events"].values() for e in evs if mark_of(e)]
        external = [a for a in coconut["absences"] if a["source"] == "external"]
        return not graph["subscriptions"] and not ours and not external

    wait_until(all_gone, 60, what="our subscriptions, events and blocks removed")
    page.reload()
    expect(page.locator(".status")).to_contain_text("Disconnected")


def test_authorizing_as_another_account_is_refused_by_name(system: System, page: Page) -> None:
    sign_in_and_configure(page, system, impersonation=False)
    authorize_as(page, "someone.else@contoso.example")
    body = page.locator("main")
    expect(body).to_contain_text("someone.else@contoso.example")
    expect(body).to_contain_text(SERVICE_ACCOUNT)


def test_a_signed_out_visitor_cannot_reach_the_settings(system: System, page: Page) -> None:
    page.goto(f"{system.web_url}/admin/exchange/users")
    expect(page.locator("#email")).to_be_visible()
    assert "/admin/sign-in" in page.url


def test_with_impersonation_off_the_sync_runs_on_the_delegated_token(
    system: System, page: Page
) -> None:
    with system.graph_http() as http:
        users = {u["mail"]: u["id"] for u in http.get("/_emulator/state").json()["users"]}
        share = {"owner": users["user1@contoso.example"], "delegate": users[SERVICE_ACCOUNT]}
        http.post("/_emulator/shares", json={**share, "role": "write"}).raise_for_status()
    sign_in_and_configure(page, system, impersonation=False)
    authorize_as(page, SERVICE_ACCOUNT)
    expect(page.locator(".status")).to_contain_text(f"Connected as {SERVICE_ACCOUNT}")
    page.click("text=User Accounts")
    shared = page.locator("tr[data-staff]", has_text="user1@contoso.example")
    expect(shared).to_contain_text("Syncing", timeout=60_000)
    expect(shared).to_contain_text("polling")
    unshared = page.locator("tr[data-staff]", has_text="user2@contoso.example")
    expect(unshared).to_contain_text("lacks Author permission", timeout=60_000)
    assert system.graph_state()["subscriptions"] == [], "delegated mode polls, it never subscribes"
    events = system.graph_state()["events"]
    assert any(mark_of(e) for e in events[users["user1@contoso.example"]])
    assert not any(mark_of(e) for e in events[users["user2@contoso.example"]])


def test_a_non_admin_is_refused_and_told_why(
    system: System, page: Page, redis_conn: redis.Redis
) -> None:
    add_user(redis_conn, "teller@bank.example", PASSWORD, "staff")
    page.goto(f"{system.web_url}/admin/exchange")
    page.fill("#email", "teller@bank.example")
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    expect(page.locator("main")).to_contain_text("teller@bank.example")
    answer = page.request.get(f"{system.web_url}/admin/api/users")
    assert answer.status == 403
    assert page.request.get(f"{system.web_url}/admin/exchange/users").status == 403


def synced_items(system: System) -> tuple[int, int]:
    """(our events in Outlook, busy blocks in Coconut)."""
    events = system.graph_state()["events"]
    ours = sum(1 for evs in events.values() for e in evs if mark_of(e))
    blocks = sum(1 for a in system.coconut_state()["absences"] if a["source"] == "external")
    return ours, blocks


def test_after_disconnect_with_removal_authorize_again_brings_every_event_and_block_back(
    system: System, page: Page, redis_conn: redis.Redis
) -> None:
    """What a newcomer did: connect, disconnect removing what the sync made, authorize again."""
    sign_in_and_configure(page, system, impersonation=True)
    authorize_as(page, SERVICE_ACCOUNT)
    page.click("text=User Accounts")
    expect(page.locator("#initial-sync")).to_contain_text("finished", timeout=60_000)
    wait_until(lambda: synced_items(system)[1] >= 20, 60, what="the seeded busy blocks")
    wait_until(lambda: len(system.graph_state()["subscriptions"]) == 3, 30, what="subscriptions")
    queue = jobs.queue("exsync", redis_conn)
    wait_until(lambda: queue.count == 0 and queue.started_job_registry.count == 0, 60,
               what="the initial sync to settle")  # fmt: skip
    first = synced_items(system)

    page.click("text=Configuration")
    page.click("#disconnect")
    page.check("#remove_items")
    page.check("#confirm")
    page.click("button.danger")
    wait_until(lambda: synced_items(system) == (0, 0), 60, what="our events and blocks removed")
    page.reload()
    expect(page.locator(".status")).to_contain_text("Disconnected")
    page.click("text=User Accounts")
    expect(page.locator("tr[data-staff]", has_text="user1@contoso.example")).not_to_contain_text(
        "Syncing"
    )

    page.click("text=Configuration")
    authorize_as(page, SERVICE_ACCOUNT)
    expect(page.locator(".status")).to_contain_text(f"Connected as {SERVICE_ACCOUNT}")
    wait_until(lambda: synced_items(system) == first, 90,
               what=f"every event and busy block back ({first})")  # fmt: skip
    page.click("text=User Accounts")
    row = page.locator("tr[data-staff]", has_text="user1@contoso.example")
    expect(row).to_contain_text("Syncing", timeout=30_000)
    expect(row).to_contain_text("last full reconciliation finished", timeout=30_000)
