"""Helpers shared by the tests/test_admin_* modules (this module holds no tests): an app with
a secret key, accounts made the way the CLI makes them, and a browser-like client that carries
the CSRF token from the page it last read, as a real form post would."""

from __future__ import annotations

import json
import re
from typing import Any

import redis
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from core import admin_accounts, connection, store
from core.secrets import SecretBox, generate_key
from core.settings import load_settings
from core.staff_status import ROSTER_KEY
from tests.harness import COCONUT_WEBHOOK_SECRET, SECRET_KEY
from webhooks.app import create_app

ADMIN = "admin@bank.example"
STAFF = "teller@bank.example"
PASSWORD = "correct-horse-battery"
HTML = {"Accept": "text/html,application/xhtml+xml"}
TENANT = "8c3f5a52-6b0e-4c1f-9a57-2f1d0c5e7b10"
CLIENT_SECRET = "Q7x~client-secret-value-0123456789"  # the value no response may ever contain


def make_app(redis_url: str, **overrides: Any) -> Flask:
    settings: dict[str, Any] = {
        "redis_url": redis_url,
        "secret_key": SECRET_KEY,
        "coconut_webhook_secret": COCONUT_WEBHOOK_SECRET,
    }
    settings.update(overrides)
    app = create_app(load_settings(**settings))
    app.config["TESTING"] = True
    return app


def make_accounts(conn: redis.Redis) -> None:
    admin_accounts.add_user(conn, ADMIN, PASSWORD, "admin")
    admin_accounts.add_user(conn, STAFF, PASSWORD, "staff")


class Browser:
    """A test client that behaves like a browser: asks for HTML and posts the page's token."""

    def __init__(self, app: Flask) -> None:
        self.client: FlaskClient = app.test_client()
        self.token = ""

    def get(self, path: str, **kw: Any) -> TestResponse:
        response = self.client.get(path, headers=HTML, **kw)
        found = re.search(r'name="csrf_token" value="([^"]+)"', response.get_data(as_text=True))
        if found:
            self.token = found.group(1)
        return response

    def post(self, path: str, data: dict[str, str], csrf: bool = True) -> TestResponse:
        form = {**data, "csrf_token": self.token} if csrf else dict(data)
        return self.client.post(path, data=form, headers=HTML)

    def sign_in(self, email: str = ADMIN, password: str = PASSWORD) -> TestResponse:
        self.get("/admin/sign-in")
        return self.post("/admin/sign-in", {"email": email, "password": password})


def field_errors(response: TestResponse) -> list[str]:
    text = response.get_data(as_text=True)
    return [m.replace("&#39;", "'") for m in re.findall(r'class="field-error"[^>]*>([^<]+)', text)]


def valid_settings(**changes: str | None) -> dict[str, str]:
    form: dict[str, str | None] = {
        "tenant_id": TENANT,
        "cloud": "worldwide",
        "shown_cloud": "worldwide",
        "confirm_endpoints": "y",
        "display_name": "Exchange Online",
        "client_id": "1f4c8c2e-0a7d-4d8e-9b3b-2a1e5c6d7f80",
        "client_secret": CLIENT_SECRET,
        "service_account": "sync@bank.example",
        "sync_past_days": "1",
        "sync_future_days": "180",
        "edit_policy": "restore",
    }
    form.update(changes)
    return {k: v for k, v in form.items() if v is not None}


def a_staff_member(
    conn: redis.Redis, staff_id: str, email: str, user_id: str = "", *,
    takes_appointments: bool = True, **state: str,
) -> None:  # fmt: skip
    """A rostered staff member as the directory job records one, matched to `user_id`."""
    person = {"name": email.split("@")[0].title(), "email": email,
              "takes_appointments": takes_appointments}  # fmt: skip
    conn.hset(ROSTER_KEY, staff_id, json.dumps(person))
    if user_id:
        conn.hset(store.staff_key(staff_id), mapping={"user_id": user_id, "address": email})
        conn.hset(store.mailbox_key(user_id), mapping={"staff_id": staff_id, "address": email})
    if state:
        conn.hset(store.staff_key(staff_id), mapping=state)


def save_connection(conn: redis.Redis, **changes: Any) -> connection.Connection:
    """The Configuration tab saved (not authorized yet), as the settings page stores it."""
    fields: dict[str, Any] = {
        "tenant_id": TENANT, "client_id": "1f4c8c2e-0a7d-4d8e-9b3b-2a1e5c6d7f80",
        "service_account": "sync@bank.example", **changes,
    }  # fmt: skip
    config = connection.Connection(**fields)
    return connection.save_configuration(conn, SecretBox(generate_key()), config, CLIENT_SECRET)


def connect(conn: redis.Redis) -> None:
    """Saved and authorized: what the callback stores once the service account signed in."""
    save_connection(conn)
    connection.mark_connected(conn, SecretBox(generate_key()), "refresh", "sync@bank.example")
