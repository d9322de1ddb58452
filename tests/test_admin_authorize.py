"""Authorize: the service account signs in at the Graph emulator (a real process, over HTTPS
with its own CA) through MSAL's auth-code flow with PKCE; anyone else is refused by name, and
Microsoft's AADSTS errors come back in plain words with the fix."""

from __future__ import annotations

import pytest
import redis

from core import connection
from core.connection import Status
from tests.test_admin_support import (
    Browser,
    make_accounts,
    make_app,
    valid_settings,
)
from webhooks.admin.aadsts import explain

SERVICE_ACCOUNT = "sync@bank.example"


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
