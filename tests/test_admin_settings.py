"""The Configuration tab: every field validated with a clear message, endpoints filled from the
cloud and confirmed, secrets encrypted at rest and never shown back or logged."""

from __future__ import annotations

import logging

import pytest
import redis

from core import connection
from core.connection import EditPolicy, Status
from core.secrets import SecretBox, SecretUnreadable, generate_key
from core.settings import SettingsError, load_settings
from tests.test_admin_support import (
    CLIENT_SECRET,
    TENANT,
    Browser,
    field_errors,
    make_accounts,
    make_app,
    valid_settings,
)


@pytest.fixture
def admin(redis_url: str, redis_conn: redis.Redis) -> Browser:
    make_accounts(redis_conn)
    browser = Browser(make_app(redis_url))
    browser.sign_in()
    browser.get("/admin/exchange")
    return browser


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("tenant_id", "", "Enter your organisation's Tenant ID."),
        ("tenant_id", "common", "'common' means any tenant; enter your organisation's own"),
        ("tenant_id", "not a tenant", "Enter a Tenant ID like 8c3f5a52-"),
        ("cloud", "germany", "Choose one of the listed clouds."),
        ("display_name", "", "Enter a Display Name"),
        ("display_name", "x" * 41, "Keep the Display Name to 40 characters or fewer."),
        ("client_id", "exsync-demo-app", "The Application (client) ID is a GUID"),
        ("client_secret", "", "Enter the client secret"),
        ("client_secret", " padded ", "copy its Value (not its ID)"),
        ("service_account", "sync", "Enter the service account's email address, like"),
        ("sync_past_days", "-1", "Days back must be a whole number from 0 to 365."),
        ("sync_past_days", "many", "Days back must be a whole number from 0 to 365."),
        ("sync_future_days", "", "Enter how many days ahead to sync (1 to 730)."),
        ("sync_future_days", "0", "Days ahead must be a whole number from 1 to 730."),
        ("sync_future_days", "731", "Days ahead must be a whole number from 1 to 730."),
        ("edit_policy", "merge", "Choose one of the two listed options."),
        ("confirm_endpoints", None, "Confirm the Graph endpoint and sign-in authority below."),
    ],
)
def test_each_bad_field_is_422_with_its_own_message_and_nothing_is_saved(
    admin: Browser, redis_conn: redis.Redis, field: str, value: str | None, message: str
) -> None:
    response = admin.post("/admin/exchange", valid_settings(**{field: value}))
    assert response.status_code == 422
    errors = field_errors(response)
    assert len(errors) == 1, errors
    assert message in errors[0]
    assert not redis_conn.exists(connection.CONNECTION_KEY)


def test_choosing_another_cloud_shows_its_endpoints_for_confirmation(admin: Browser) -> None:
    response = admin.post("/admin/exchange", valid_settings(cloud="usgov"))
    assert response.status_code == 422
    assert field_errors(response) == [
        "You chose another cloud: check the endpoints filled in for it below and confirm them."
    ]
    page = response.get_data(as_text=True)
    assert '<dd id="graph-endpoint">https://graph.microsoft.us/v1.0</dd>' in page
    assert f'<dd id="sign-in-authority">https://login.microsoftonline.us/{TENANT}</dd>' in page
    assert 'name="shown_cloud" type="hidden" value="usgov"' in page
    confirmed = admin.post("/admin/exchange", valid_settings(cloud="usgov", shown_cloud="usgov"))
    assert confirmed.status_code == 303


@pytest.mark.parametrize(
    ("cloud", "graph_url", "authority"),
    [
        ("worldwide", "https://graph.microsoft.com/v1.0", "https://login.microsoftonline.com"),
        ("usgov", "https://graph.microsoft.us/v1.0", "https://login.microsoftonline.us"),
        ("usgovdod", "https://dod-graph.microsoft.us/v1.0", "https://login.microsoftonline.us"),
        ("china", "https://microsoftgraph.chinacloudapi.cn/v1.0", "https://login.chinacloudapi.cn"),
    ],
)
def test_saved_connection_holds_the_clouds_endpoints_for_the_workers(
    admin: Browser, redis_conn: redis.Redis, cloud: str, graph_url: str, authority: str
) -> None:
    response = admin.post("/admin/exchange", valid_settings(cloud=cloud, shown_cloud=cloud))
    assert response.status_code == 303
    saved = connection.load(redis_conn)
    assert (saved.graph_url, saved.authority) == (graph_url, authority)
    assert saved.tenant_authority == f"{authority}/{TENANT}"


def signed_in_with_the_emulator_as_worldwide(redis_url: str, redis_conn: redis.Redis) -> Browser:
    make_accounts(redis_conn)
    app = make_app(
        redis_url,
        cloud_override_graph_url="https://127.0.0.1:8443/v1.0",
        cloud_override_authority="https://127.0.0.1:8443",
    )
    browser = Browser(app)
    browser.sign_in()
    return browser


def test_cloud_override_points_worldwide_at_the_emulator_and_accepts_its_client_id(
    redis_url: str, redis_conn: redis.Redis
) -> None:
    browser = signed_in_with_the_emulator_as_worldwide(redis_url, redis_conn)
    page = browser.get("/admin/exchange").get_data(as_text=True)
    assert '<dd id="graph-endpoint">https://127.0.0.1:8443/v1.0</dd>' in page
    response = browser.post("/admin/exchange", valid_settings(client_id="exsync-demo-app"))
    assert response.status_code == 303
    saved = connection.load(redis_conn)
    assert saved.authority == "https://127.0.0.1:8443"
    assert saved.client_id == "exsync-demo-app"


def test_the_pages_let_authorize_redirect_its_form_post_to_every_sign_in_authority(
    redis_url: str, redis_conn: redis.Redis
) -> None:
    """Chromium checks a form's redirects against form-action, and Authorize's post is answered
    with a redirect to the cloud's sign-in authority (here the emulator's)."""
    browser = signed_in_with_the_emulator_as_worldwide(redis_url, redis_conn)
    policy = browser.get("/admin/exchange").headers["Content-Security-Policy"]
    form_action = next(d.split() for d in policy.split(";") if d.split()[0] == "form-action")
    assert form_action[1:] == [
        "'self'",
        "https://127.0.0.1:8443",
        "https://login.chinacloudapi.cn",
        "https://login.microsoftonline.com",
        "https://login.microsoftonline.us",
    ]


def test_saved_settings_are_stored_and_shown_back_without_the_secret(
    admin: Browser, redis_conn: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    form = valid_settings(
        service_account="Sync@Bank.Example", impersonation="y", show_event_titles="y",
        sync_past_days="3", sync_future_days="90", edit_policy="keep",
        tenant_id="contoso.onmicrosoft.com",
    )  # fmt: skip
    response = admin.post("/admin/exchange", form)
    assert response.status_code == 303
    saved = connection.load(redis_conn)
    assert saved.tenant_id == "contoso.onmicrosoft.com"
    assert saved.service_account == "sync@bank.example"
    assert (saved.impersonation, saved.show_event_titles) == (True, True)
    assert (saved.sync_past_days, saved.sync_future_days) == (3, 90)
    assert saved.edit_policy == EditPolicy.KEEP
    assert saved.status == Status.CONFIGURED
    assert saved.has_client_secret
    page = admin.get("/admin/exchange").get_data(as_text=True)
    assert "Saved. Next: click Authorize" in page
    assert "A secret is stored (encrypted). Leave blank to keep it" in page
    assert CLIENT_SECRET not in page
    raw = b"".join(v for v in redis_conn.hgetall(connection.CONNECTION_KEY).values())
    assert CLIENT_SECRET.encode() not in raw
    assert CLIENT_SECRET not in caplog.text
    assert CLIENT_SECRET not in repr(saved)


def test_blank_secret_keeps_the_stored_one_and_a_new_tenant_needs_a_new_authorize(
    redis_url: str, redis_conn: redis.Redis
) -> None:
    make_accounts(redis_conn)
    key = generate_key()
    browser = Browser(make_app(redis_url, secret_key=key))
    browser.sign_in()
    browser.get("/admin/exchange")
    assert browser.post("/admin/exchange", valid_settings()).status_code == 303
    box = SecretBox(key)
    connection.mark_connected(redis_conn, box, "refresh-token-value", "sync@bank.example")
    browser.get("/admin/exchange")
    kept = browser.post("/admin/exchange", valid_settings(client_secret="", display_name="EXO"))
    assert kept.status_code == 303
    assert connection.client_secret(redis_conn, box) == CLIENT_SECRET
    assert connection.load(redis_conn).status == Status.CONNECTED
    browser.get("/admin/exchange")
    moved = browser.post(
        "/admin/exchange", valid_settings(client_secret="", tenant_id="fabrikam.example")
    )
    assert moved.status_code == 303
    assert connection.load(redis_conn).status == Status.CONFIGURED
    assert connection.refresh_token(redis_conn, box) == ""


def test_secret_box_rotation_reads_old_secrets_and_a_lost_key_says_what_to_do() -> None:
    old, new = generate_key(), generate_key()
    token = SecretBox(old).encrypt("refresh")
    assert SecretBox(f"{new},{old}").decrypt(token) == "refresh"
    assert SecretBox(new).decrypt(SecretBox(f"{new},{old}").encrypt("x")) == "x"
    with pytest.raises(SecretUnreadable, match="EXSYNC_SECRET_KEY: was the key changed"):
        SecretBox(new).decrypt(token)
    assert "redacted" in repr(SecretBox(new))


def test_a_malformed_secret_key_stops_settings_naming_the_variable_not_its_value() -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(secret_key="hunter2-not-a-fernet-key")
    assert "EXSYNC_SECRET_KEY" in str(caught.value)
    assert "hunter2" not in str(caught.value)


def test_fill_in_endpoints_shows_the_chosen_clouds_endpoints_and_saves_nothing(
    admin: Browser, redis_conn: redis.Redis
) -> None:
    response = admin.post(
        "/admin/exchange", valid_settings(cloud="china", action="fill", confirm_endpoints=None)
    )
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert '<dd id="graph-endpoint">https://microsoftgraph.chinacloudapi.cn/v1.0</dd>' in page
    assert f"https://login.chinacloudapi.cn/{TENANT}" in page
    assert field_errors(response) == []
    assert not redis_conn.exists(connection.CONNECTION_KEY)


def test_the_cloud_override_needs_both_urls_and_says_so() -> None:
    with pytest.raises(SettingsError, match=r"EXSYNC_CLOUD_OVERRIDE_AUTHORITY: .* together"):
        load_settings(cloud_override_graph_url="https://127.0.0.1:8443/v1.0")
