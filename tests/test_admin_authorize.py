"""Authorize: the service account signs in at the Graph emulator (a real process, over HTTPS
with its own CA) through MSAL's auth-code flow with PKCE; anyone else is refused by name, and
Microsoft's AADSTS errors come back in plain words with the fix."""

from __future__ import annotations

import html
import logging
import os
import re
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import redis

from core import connection, jobs
from core.connection import Status
from core.job_kinds import JobKind
from core.microsoft.aadsts import explain
from core.secrets import SecretBox, generate_key
from tests.emulator_launch import graph_argv, launch
from tests.harness import GRAPH_CLIENT_ID, GRAPH_CLIENT_SECRET, TENANT, free_port
from tests.test_admin_support import (
    Browser,
    make_accounts,
    make_app,
    valid_settings,
)

SERVICE_ACCOUNT = "sync@bank.example"
OTHER_ACCOUNT = "alice.teller@bank.example"
HTML_ACCEPT = {"Accept": "text/html"}


@dataclass
class Emulator:
    base: str
    ca_file: str

    def http(self) -> httpx.Client:
        trust = ssl.create_default_context(cafile=self.ca_file)
        return httpx.Client(base_url=self.base, verify=trust, timeout=10)


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[Emulator]:
    """The Graph emulator as its own process, as the harness starts it, with two accounts."""
    port, ca_file = free_port(), tmp_path / "graph-ca.pem"
    env = {k: v for k, v in os.environ.items() if not k.startswith("EXSYNC_")}
    proc, base = launch(graph_argv(port, ca_file), env, tmp_path / "graph.log")
    try:
        found = Emulator(base, str(ca_file))
        with found.http() as http:
            for mail in (SERVICE_ACCOUNT, OTHER_ACCOUNT):
                http.post("/_emulator/users", json={"mail": mail}).raise_for_status()
        yield found
    finally:
        proc.stop()


@dataclass
class Setup:
    browser: Browser
    key: str
    emulator: Emulator


@pytest.fixture
def setup(redis_url: str, redis_conn: redis.Redis, emulator: Emulator) -> Setup:
    """An admin signed in to an app whose "worldwide" cloud is the emulator."""
    make_accounts(redis_conn)
    key = generate_key()
    app = make_app(
        redis_url,
        secret_key=key,
        cloud_override_graph_url=f"{emulator.base}/v1.0",
        cloud_override_authority=emulator.base,
        graph_ca_file=emulator.ca_file,
    )
    browser = Browser(app)
    browser.sign_in()
    return Setup(browser, key, emulator)


def configure(setup: Setup, **changes: str | None) -> None:
    defaults: dict[str, str | None] = {
        "client_id": GRAPH_CLIENT_ID,
        "client_secret": GRAPH_CLIENT_SECRET,
        "service_account": SERVICE_ACCOUNT,
    }
    form = valid_settings(**{**defaults, **changes})
    setup.browser.get("/admin/exchange")
    response = setup.browser.post("/admin/exchange", form)
    assert response.status_code == 303, response.get_data(as_text=True)


def start_authorize(setup: Setup) -> str:
    setup.browser.get("/admin/exchange")
    response = setup.browser.post("/admin/exchange/authorize", {})
    assert response.status_code == 303, response.get_data(as_text=True)
    assert response.location.startswith(f"{setup.emulator.base}/{TENANT}/oauth2/v2.0/authorize?")
    return response.location


def sign_in_at_emulator(setup: Setup, authorize_url: str, account: str) -> str:
    """Pick the account on the emulator's sign-in page; returns our callback path and query."""
    with setup.emulator.http() as http:
        page = http.get(authorize_url)
        assert page.status_code == 200, page.text
        form = {
            name: html.unescape(value)
            for name, value in re.findall(
                r'<input type="hidden" name="([^"]+)" value="([^"]*)">', page.text
            )
        }
        form["user_id"] = re.search(
            r'<button name="user_id" value="([^"]+)"[^>]*>[^<]*&lt;' + re.escape(account),
            page.text,
        ).group(1)  # type: ignore[union-attr]
        answer = http.post(authorize_url.split("?")[0], data=form)
    assert answer.status_code == 302, answer.text
    back = urlsplit(answer.headers["location"])
    assert back.path == "/admin/exchange/callback"
    return f"{back.path}?{back.query}"


def initial_sync_jobs(redis_conn: redis.Redis) -> list[str]:
    queue = jobs.queue("exsync", redis_conn)
    return [job.func_name for job in queue.jobs]


def test_service_account_sign_in_connects_stores_the_refresh_token_encrypted_and_starts_sync(
    setup: Setup, redis_conn: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    configure(setup, impersonation=None)
    url = start_authorize(setup)
    query = parse_qs(urlsplit(url).query)
    assert query["code_challenge_method"] == ["S256"]
    assert query["code_challenge"][0] and query["state"][0]
    assert query["login_hint"] == [SERVICE_ACCOUNT]
    assert "https://graph.microsoft.com/Calendars.ReadWrite.Shared" in query["scope"][0].split()
    callback = sign_in_at_emulator(setup, url, SERVICE_ACCOUNT)
    answer = setup.browser.get(callback)
    assert answer.status_code == 303
    page = setup.browser.get("/admin/exchange").get_data(as_text=True)
    assert f"Connected as {SERVICE_ACCOUNT}. The initial sync has started" in page
    stored = connection.load(redis_conn)
    assert stored.status == Status.CONNECTED
    assert stored.connected_account == SERVICE_ACCOUNT
    refresh = connection.refresh_token(redis_conn, SecretBox(setup.key))
    assert refresh
    assert refresh.encode() not in redis_conn.hget(connection.CONNECTION_KEY, "refresh_token")
    with setup.emulator.http() as http:
        redeemed = http.post(
            f"/{TENANT}/oauth2/v2.0/token",
            data={"grant_type": "refresh_token", "refresh_token": refresh,
                  "client_id": GRAPH_CLIENT_ID, "client_secret": GRAPH_CLIENT_SECRET},
        )  # fmt: skip
    assert redeemed.status_code == 200
    assert initial_sync_jobs(redis_conn) == [JobKind.INITIAL_SYNC.path]
    for secret in (refresh, GRAPH_CLIENT_SECRET):
        assert secret not in page
        assert secret not in caplog.text


def test_signing_in_as_another_account_is_refused_naming_it_and_nothing_is_stored(
    setup: Setup, redis_conn: redis.Redis
) -> None:
    configure(setup)
    callback = sign_in_at_emulator(setup, start_authorize(setup), OTHER_ACCOUNT)
    redirected = setup.browser.get(callback)
    assert redirected.status_code == 303, "away from the address holding the code"
    assert redirected.headers["Location"] == "/admin/exchange/wrong-account"
    answer = setup.browser.get("/admin/exchange/wrong-account")
    assert answer.status_code == 403
    text = answer.get_data(as_text=True)
    assert f'Microsoft signed in <strong class="account">{OTHER_ACCOUNT}</strong>' in text
    assert f"the service account <strong>{SERVICE_ACCOUNT}</strong>" in text
    assert "private/incognito window" in text
    stored = connection.load(redis_conn)
    assert stored.status == Status.CONFIGURED
    assert connection.refresh_token(redis_conn, SecretBox(setup.key)) == ""
    assert initial_sync_jobs(redis_conn) == []


def test_a_callback_used_twice_is_refused_the_second_time(setup: Setup) -> None:
    configure(setup)
    callback = sign_in_at_emulator(setup, start_authorize(setup), SERVICE_ACCOUNT)
    assert setup.browser.get(callback).status_code == 303
    again = setup.browser.get(callback)
    assert again.status_code == 400
    assert "This sign-in cannot be used" in again.get_data(as_text=True)


def test_a_callback_in_another_admins_browser_is_refused(
    setup: Setup, redis_url: str, redis_conn: redis.Redis
) -> None:
    configure(setup)
    callback = sign_in_at_emulator(setup, start_authorize(setup), SERVICE_ACCOUNT)
    other = Browser(setup.browser.client.application)
    other.sign_in()
    refused = other.get(callback)
    assert refused.status_code == 400
    assert "started by another session" in refused.get_data(as_text=True)
    assert connection.load(redis_conn).status == Status.CONFIGURED


def test_a_wrong_client_secret_is_explained_with_the_fix(setup: Setup) -> None:
    configure(setup, client_secret="not-the-emulators-secret")
    callback = sign_in_at_emulator(setup, start_authorize(setup), SERVICE_ACCOUNT)
    answer = setup.browser.get(callback)
    assert answer.status_code == 400
    text = answer.get_data(as_text=True)
    assert "The client secret is wrong." in text
    assert "(AADSTS7000215)" in text
    assert "not-the-emulators-secret" not in text


def test_an_unknown_tenant_is_explained_before_leaving_for_microsoft(setup: Setup) -> None:
    configure(setup, tenant_id="0badc0de-0000-4000-8000-000000000000")
    setup.browser.get("/admin/exchange")
    answer = setup.browser.post("/admin/exchange/authorize", {})
    assert answer.status_code == 400
    text = answer.get_data(as_text=True)
    assert "Microsoft does not know this tenant in the chosen cloud." in text
    assert "(AADSTS90002)" in text


@pytest.mark.parametrize(
    ("description", "problem"),
    [
        ("AADSTS65001: The user or administrator has not consented to use the application.",
         "Nobody has granted this app the permissions it asks for"),
        ("AADSTS50057: The user account is disabled.",
         "The account that signed in is disabled in Entra ID."),
        ("AADSTS700016: Application with identifier 'x' was not found in the directory 'y'.",
         "The Application (client) ID is not registered in this tenant"),
    ],
)  # fmt: skip
def test_microsoft_refusals_on_the_way_back_are_shown_in_plain_words(
    setup: Setup, redis_conn: redis.Redis, description: str, problem: str
) -> None:
    """Entra sends these back to the redirect URI as `error` and `error_description`."""
    configure(setup)
    state = parse_qs(urlsplit(start_authorize(setup)).query)["state"][0]
    answer = setup.browser.get(
        "/admin/exchange/callback",
        query_string={"error": "access_denied", "error_description": description, "state": state},
    )
    assert answer.status_code == 400
    text = html.unescape(answer.get_data(as_text=True))
    assert problem in text
    assert "How to fix it" in text
    assert connection.load(redis_conn).status == Status.CONFIGURED


@pytest.mark.parametrize(
    ("error", "description", "code", "words"),
    [
        ("invalid_client", "AADSTS65001: The user or admin has not consented", "AADSTS65001",
         "Grant admin consent"),
        ("invalid_request", "AADSTS90002: Tenant 'x' not found.", "AADSTS90002",
         "Check the Tenant ID"),
        ("unauthorized_client", "AADSTS700016: Application with identifier", "AADSTS700016",
         "Application (client) ID"),
        ("invalid_grant", "AADSTS50057: The user account is disabled.", "AADSTS50057",
         "Enable the service account"),
        ("access_denied", "", "access_denied", "Click Authorize again"),
        ("server_error", "AADSTS1234567: something new", "AADSTS1234567",
         "Look the code up in Microsoft's AADSTS error list"),
    ],
)  # fmt: skip
def test_aadsts_codes_are_explained_with_the_fix(
    error: str, description: str, code: str, words: str
) -> None:
    explanation = explain(error, description)
    assert explanation.code == code
    assert words in explanation.fix


def test_callback_without_a_started_sign_in_is_400_and_says_to_authorize_again(
    redis_url: str, redis_conn: redis.Redis
) -> None:
    make_accounts(redis_conn)
    browser = Browser(make_app(redis_url))
    browser.sign_in()
    response = browser.get("/admin/exchange/callback?code=stolen&state=guessed")
    assert response.status_code == 400
    assert "click Authorize again" in response.get_data(as_text=True)
    assert connection.load(redis_conn).status == Status.NOT_CONFIGURED


def test_authorize_before_saving_the_configuration_is_409(
    redis_url: str, redis_conn: redis.Redis
) -> None:
    make_accounts(redis_conn)
    browser = Browser(make_app(redis_url))
    browser.sign_in()
    browser.get("/admin/exchange")
    response = browser.post("/admin/exchange/authorize", {})
    assert response.status_code == 409
    assert "Fill in and save the Configuration tab" in response.get_data(as_text=True)


def test_a_dead_refresh_token_shows_re_authorize_needed_on_every_page(
    redis_url: str, redis_conn: redis.Redis
) -> None:
    make_accounts(redis_conn)
    browser = Browser(make_app(redis_url))
    browser.sign_in()
    browser.get("/admin/exchange")
    browser.post("/admin/exchange", valid_settings())
    connection.mark_reauthorize(redis_conn)
    page = browser.get("/admin/exchange").get_data(as_text=True)
    assert "Re-authorize needed." in page
    assert "nothing is syncing" in page
