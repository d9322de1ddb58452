"""Finding 6: setting an account's password ends every session it has, wherever it is."""

from __future__ import annotations

import os
import subprocess
import sys

import redis

from core import admin_accounts
from tests.test_admin_support import ADMIN, HTML, PASSWORD, STAFF, Browser, make_accounts, make_app

NEW_PASSWORD = "a-new-password-after-the-leak"


def test_setting_the_password_ends_the_accounts_sessions_and_only_those(
    redis_url: str, redis_conn: redis.Redis
) -> None:
    make_accounts(redis_conn)
    app = make_app(redis_url)
    laptop, phone, teller = Browser(app), Browser(app), Browser(app)
    for browser, email in ((laptop, ADMIN), (phone, ADMIN), (teller, STAFF)):
        assert browser.sign_in(email).status_code == 303
    cookie = laptop.client.get_cookie("exsync_admin")
    assert cookie is not None
    thief = app.test_client()
    thief.set_cookie("exsync_admin", cookie.value)
    assert laptop.get("/admin/exchange").status_code == 200

    admin_accounts.add_user(redis_conn, ADMIN, NEW_PASSWORD)  # what `exsync admin add-user` does

    for browser in (laptop, phone):
        ended = browser.get("/admin/exchange")
        assert ended.status_code == 302, "a session outlived the password it signed in with"
        assert "why=expired" in ended.location
    stolen = thief.get("/admin/exchange", headers={"Accept": "application/json"})
    assert stolen.status_code == 401
    assert teller.get("/admin/exchange").status_code == 403  # still signed in, as staff
    assert Browser(app).sign_in(ADMIN, PASSWORD).status_code == 401
    again = Browser(app)
    assert again.sign_in(ADMIN, NEW_PASSWORD).status_code == 303
    assert again.get("/admin/exchange").status_code == 200


def test_exsync_admin_add_user_on_an_existing_account_signs_it_out_everywhere(
    redis_url: str, redis_conn: redis.Redis
) -> None:
    make_accounts(redis_conn)
    app = make_app(redis_url)
    browser = Browser(app)
    browser.sign_in()
    assert browser.get("/admin/exchange").status_code == 200
    env = {k: v for k, v in os.environ.items() if not k.startswith("EXSYNC_")}
    env.update(EXSYNC_REDIS_URL=redis_url, EXSYNC_ADMIN_PASSWORD=NEW_PASSWORD)
    done = subprocess.run(
        [sys.executable, "-m", "exsync.cli", "admin", "add-user", ADMIN],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    ended = browser.client.get("/admin/exchange", headers=HTML)
    assert ended.status_code == 302
    assert "why=expired" in ended.location
    assert browser.sign_in(ADMIN, NEW_PASSWORD).status_code == 303
    assert browser.get("/admin/exchange").status_code == 200
