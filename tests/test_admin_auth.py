"""Only admins reach the admin pages: sign-in, sessions, 401/403 with reasons, CSRF, tokens."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

import webhooks
from tests.test_admin_support import (
    ADMIN,
    HTML,
    PASSWORD,
    STAFF,
    Browser,
    make_accounts,
    make_app,
    valid_settings,
)
from webhooks.admin import throttle


def test_signed_out_page_request_redirects_to_sign_in_which_says_why(redis_url: str) -> None:
    browser = Browser(make_app(redis_url))
    response = browser.get("/admin/exchange")
    assert response.status_code == 302
    assert response.location.startswith("/admin/sign-in?")
    assert "next=/admin/exchange" in response.location
    page = browser.get(response.location)
    assert page.status_code == 200
    assert "Sign in with an admin account to see that page." in page.get_data(as_text=True)


def test_signed_out_api_request_is_401_with_a_reason(redis_url: str) -> None:
    client = make_app(redis_url).test_client()
    response = client.get("/admin/exchange", headers={"Accept": "application/json"})
    assert response.status_code == 401
    assert response.get_json() == {
        "error": "Unauthorized",
        "reason": "Sign in with an admin account to see that page.",
    }


def test_admin_signs_in_reaches_settings_and_is_sent_where_they_were_going(
    redis_url: str, redis_conn: redis.Redis
) -> None:
    make_accounts(redis_conn)
    browser = Browser(make_app(redis_url))
    browser.get("/admin/sign-in?next=/admin/exchange")
    response = browser.post(
        "/admin/sign-in", {"email": "Admin@Bank.Example", "password": PASSWORD,
                           "next": "/admin/exchange"}
    )  # fmt: skip
    assert response.status_code == 303
    assert response.location == "/admin/exchange"
    page = browser.get("/admin/exchange")
    assert page.status_code == 200
    assert "Microsoft Exchange" in page.get_data(as_text=True)
    assert ADMIN in page.get_data(as_text=True)


def test_failed_sign_ins_from_one_address_are_slowed_with_429_saying_when_to_try_again(
    redis_url: str, redis_conn: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    make_accounts(redis_conn)
    app = make_app(redis_url)
    browser = Browser(app)
    for _ in range(throttle.BY_ADDRESS.free):
        response = browser.sign_in(ADMIN, "not-the-password")
        assert response.status_code == 401
        assert "Wrong email or password." in response.get_data(as_text=True)
    slowed = browser.sign_in(ADMIN, PASSWORD)
    assert slowed.status_code == 429
    assert slowed.headers["Retry-After"] == "1"
    text = slowed.get_data(as_text=True)
    assert "Too many failed sign-ins from this network address. Try again in 1 second" in text
    assert re.search(r"after \d\d:\d\d:\d\d UTC\.", text)
    assert browser.get("/admin/exchange").status_code == 302
    assert "admin.signin_failed" in caplog.text
    assert "admin.signin_throttled" in caplog.text
    assert "not-the-password" not in caplog.text
    assert PASSWORD not in caplog.text
    assert PASSWORD not in text
    time.sleep(1)
    assert browser.sign_in(ADMIN, PASSWORD).status_code == 303


def test_the_delays_double_from_one_second_up_to_a_cap_after_the_free_attempts() -> None:
    assert [throttle.BY_ADDRESS.earliest(n) for n in range(1, 10)] == [0, 0, 0, 0, 0, 1, 3, 7, 15]
    assert throttle.BY_ADDRESS.earliest(16) - throttle.BY_ADDRESS.earliest(15) == 900
    assert throttle.BY_ACCOUNT.earliest(20) == 0
    assert throttle.BY_ACCOUNT.earliest(27) - throttle.BY_ACCOUNT.earliest(26) == 60
    for rule in (throttle.BY_ADDRESS, throttle.BY_ACCOUNT):
        gaps = [rule.earliest(n + 1) - rule.earliest(n) for n in range(1, 10_000)]
        assert max(gaps) == rule.cap
        assert gaps == sorted(gaps)


def test_a_right_password_clears_the_accounts_count_but_not_the_addresss(
    redis_url: str, redis_conn: redis.Redis
) -> None:
    make_accounts(redis_conn)
    browser = Browser(make_app(redis_url))
    for _ in range(3):
        browser.sign_in(ADMIN, "not-the-password")
    assert browser.sign_in().status_code == 303
    assert not redis_conn.exists(f"exsync:admin:signin-throttle:account:{ADMIN}")
    by_address = redis_conn.hget("exsync:admin:signin-throttle:address:127.0.0.1", "n")
    assert by_address == b"3"
    assert redis_conn.ttl(f"exsync:admin:signed-in-from:{ADMIN}:127.0.0.1") > 29 * 86400


def test_time_left_unused_is_not_saved_up_each_delay_counts_from_the_attempt_before(
    redis_url: str, redis_conn: redis.Redis
) -> None:
    make_accounts(redis_conn)
    browser = Browser(make_app(redis_url))
    for _ in range(throttle.BY_ADDRESS.free):
        browser.sign_in(ADMIN, "not-the-password")
    time.sleep(3)
    assert browser.sign_in(ADMIN, "not-the-password").status_code == 401  # waited 1 s, and more
    slowed = browser.sign_in(ADMIN, "not-the-password")
    assert slowed.status_code == 429
    assert int(slowed.headers["Retry-After"]) in (1, 2)


def test_behind_trusted_proxies_the_forwarded_address_is_the_one_counted(
    redis_url: str, redis_conn: redis.Redis
) -> None:
    make_accounts(redis_conn)
    app = make_app(redis_url, trusted_proxies=1)
    attacker, admin = Browser(app), Browser(app)
    for browser, client in ((attacker, "198.51.100.7"), (admin, "203.0.113.9")):
        browser.client.environ_base.update(REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR=client)
    answers = [attacker.sign_in(ADMIN, "not-the-password").status_code for _ in range(6)]
    assert answers[-1] == 429
    assert admin.sign_in().status_code == 303


def test_without_trusted_proxies_a_forged_forwarded_address_changes_nothing(
    redis_url: str, redis_conn: redis.Redis
) -> None:
    make_accounts(redis_conn)
    browser = Browser(make_app(redis_url))
    answers = []
    for n in range(6):
        browser.client.environ_base["HTTP_X_FORWARDED_FOR"] = f"198.51.100.{n}"
        answers.append(browser.sign_in(ADMIN, "not-the-password").status_code)
    assert answers == [401] * 5 + [429]


def test_an_address_is_counted_alone_and_an_ipv6_one_by_its_64() -> None:
    assert throttle.client("2001:db8:1:2::1") == throttle.client("2001:db8:1:2:ffff::9")
    assert throttle.client("2001:db8:1:2::1") == "2001:db8:1:2::/64"
    assert throttle.client("2001:db8:1:3::1") != throttle.client("2001:db8:1:2::1")
    assert throttle.client("::ffff:192.0.2.1") == "192.0.2.1"
    assert throttle.client("192.0.2.1") == "192.0.2.1"
    assert throttle.client(None) == throttle.client("not an address") == "unknown"


def test_an_over_long_email_is_a_wrong_sign_in_that_touches_no_key(
    redis_url: str, redis_conn: redis.Redis
) -> None:
    make_accounts(redis_conn)
    before = set(redis_conn.keys())
    response = Browser(make_app(redis_url)).sign_in("a" * 243 + "@bank.example", PASSWORD)
    assert response.status_code == 401
    assert "Wrong email or password." in response.get_data(as_text=True)
    assert set(redis_conn.keys()) == before


def test_no_admin_template_has_inline_script_or_style_which_the_policy_would_block() -> None:
    inline = re.compile(r"<script(?![^>]*\ssrc=)|<style|\sstyle=|\son[a-z]+=|javascript:", re.I)
    templates = sorted(Path(webhooks.__file__).parent.glob("templates/**/*.html"))
    assert templates
    for template in templates:
        found = inline.search(template.read_text())
        assert found is None, f"{template.name}: {found and found.group(0)}"


def test_unknown_email_gets_the_same_answer_as_a_wrong_password(
    redis_url: str, redis_conn: redis.Redis
) -> None:
    make_accounts(redis_conn)
    response = Browser(make_app(redis_url)).sign_in("nobody@bank.example", PASSWORD)
    assert response.status_code == 401
    assert "Wrong email or password." in response.get_data(as_text=True)


def test_non_admin_account_is_403_and_the_page_names_the_account(
    redis_url: str, redis_conn: redis.Redis
) -> None:
    make_accounts(redis_conn)
    browser = Browser(make_app(redis_url))
    assert browser.sign_in(STAFF).status_code == 303
    response = browser.get("/admin/exchange")
    assert response.status_code == 403
    text = response.get_data(as_text=True)
    assert f"You are signed in as {STAFF}, which is not an admin account." in text
    assert 'action="/admin/sign-out"' in text
    assert browser.post("/admin/sign-out", {}).status_code == 303
    assert browser.get("/admin/exchange").status_code == 302


def test_demoting_an_admin_takes_effect_on_their_next_request(
    redis_url: str, redis_conn: redis.Redis
) -> None:
    make_accounts(redis_conn)
    browser = Browser(make_app(redis_url))
    browser.sign_in()
    assert browser.get("/admin/exchange").status_code == 200
    redis_conn.hset(f"exsync:admin:user:{ADMIN}", "role", "staff")
    assert browser.get("/admin/exchange").status_code == 403


def test_sign_out_ends_the_session_even_for_a_copied_cookie(
    redis_url: str, redis_conn: redis.Redis
) -> None:
    make_accounts(redis_conn)
    app = make_app(redis_url)
    browser = Browser(app)
    browser.sign_in()
    cookie = browser.client.get_cookie("exsync_admin")
    assert cookie is not None
    browser.get("/admin/exchange")
    assert browser.post("/admin/sign-out", {}).status_code == 303
    thief = app.test_client()
    thief.set_cookie("exsync_admin", cookie.value)
    response = thief.get("/admin/exchange", headers=HTML)
    assert response.status_code == 302
    assert "why=expired" in response.location


def test_session_cookie_is_httponly_lax_and_secure_on_an_https_public_url(
    redis_url: str, redis_conn: redis.Redis
) -> None:
    make_accounts(redis_conn)
    browser = Browser(make_app(redis_url, public_url="https://sync.bank.example"))
    response = browser.sign_in()
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=Lax" in cookie
    assert "Secure" in cookie
    plain = Browser(make_app(redis_url)).sign_in().headers["Set-Cookie"]
    assert "Secure" not in plain


def test_sign_in_never_redirects_off_site(redis_url: str, redis_conn: redis.Redis) -> None:
    make_accounts(redis_conn)
    browser = Browser(make_app(redis_url))
    for target in ("https://evil.example/", "//evil.example/x", "javascript:alert(1)"):
        browser.get("/admin/sign-in")  # signing in rotates the session, and its CSRF token
        response = browser.post(
            "/admin/sign-in", {"email": ADMIN, "password": PASSWORD, "next": target}
        )
        assert response.location == "/admin/exchange", target


def test_form_post_without_csrf_token_is_400_and_changes_nothing(
    redis_url: str, redis_conn: redis.Redis
) -> None:
    make_accounts(redis_conn)
    browser = Browser(make_app(redis_url))
    browser.sign_in()
    browser.get("/admin/exchange")
    response = browser.post("/admin/exchange", valid_settings(), csrf=False)
    assert response.status_code == 400
    assert "Form expired or not from this site" in response.get_data(as_text=True)
    assert not redis_conn.exists("exsync:connection")


def test_sign_in_itself_needs_the_csrf_token(redis_url: str, redis_conn: redis.Redis) -> None:
    make_accounts(redis_conn)
    browser = Browser(make_app(redis_url))
    response = browser.post("/admin/sign-in", {"email": ADMIN, "password": PASSWORD}, csrf=False)
    assert response.status_code == 400


def test_webhook_receivers_are_not_subject_to_csrf(redis_url: str) -> None:
    client = make_app(redis_url).test_client()
    response = client.post("/webhooks/graph?validationToken=hello-graph")
    assert response.status_code == 200
    assert response.get_data(as_text=True) == "hello-graph"


def _cli(redis_url: str, *args: str, password: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EXSYNC_")}
    env["EXSYNC_REDIS_URL"] = redis_url
    if password is not None:
        env["EXSYNC_ADMIN_PASSWORD"] = password
    return subprocess.run(
        [sys.executable, "-m", "exsync.cli", "admin", *args],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_cli_add_user_creates_an_account_that_can_sign_in(redis_url: str) -> None:
    done = _cli(redis_url, "add-user", "New.Admin@Bank.example", password=PASSWORD)
    assert done.returncode == 0, done.stderr
    assert "admin account new.admin@bank.example saved" in done.stdout
    assert PASSWORD not in done.stdout + done.stderr
    browser = Browser(make_app(redis_url))
    assert browser.sign_in("new.admin@bank.example").status_code == 303
    assert browser.get("/admin/exchange").status_code == 200


def test_cli_add_user_refuses_a_short_password_with_exit_2(redis_url: str) -> None:
    done = _cli(redis_url, "add-user", "x@bank.example", password="short")
    assert done.returncode == 2
    assert "at least 12 characters" in done.stderr


def test_cli_token_works_as_bearer_and_skips_csrf_but_a_bad_one_is_401(
    redis_url: str, redis_conn: redis.Redis
) -> None:
    done = _cli(redis_url, "add-token", "deploy-script")
    assert done.returncode == 0, done.stderr
    token = done.stdout.strip()
    assert token.startswith("exsa_")
    assert token.encode() not in b"".join(
        str(redis_conn.hgetall(k)).encode() for k in redis_conn.keys("exsync:admin:*")
    )
    client = make_app(redis_url).test_client()
    bearer = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    assert client.get("/admin/exchange", headers=bearer).status_code == 200
    saved = client.post("/admin/exchange", headers=bearer, data=valid_settings())
    assert saved.status_code == 303
    assert redis_conn.hget("exsync:connection", "tenant_id") is not None
    wrong = client.get("/admin/exchange", headers={"Authorization": "Bearer exsa_nope"})
    assert wrong.status_code == 401
    assert wrong.headers["WWW-Authenticate"].startswith("Bearer")
    assert wrong.get_json()["reason"] == "the token is unknown or revoked"


def test_a_bad_bearer_token_is_not_rescued_by_a_session_cookie(
    redis_url: str, redis_conn: redis.Redis
) -> None:
    make_accounts(redis_conn)
    browser = Browser(make_app(redis_url))
    browser.sign_in()
    response = browser.client.get("/admin/exchange", headers={"Authorization": "Bearer exsa_x"})
    assert response.status_code == 401


def test_without_a_secret_key_admin_pages_are_503_naming_the_setting_and_webhooks_still_work(
    redis_url: str,
) -> None:
    app = make_app(redis_url, secret_key="")
    client = app.test_client()
    response = client.get("/admin/exchange", headers={"Accept": "application/json"})
    assert response.status_code == 503
    assert "EXSYNC_SECRET_KEY" in response.get_json()["reason"]
    assert client.post("/webhooks/graph?validationToken=ok").status_code == 200


def test_cli_remove_user_and_revoke_token_cut_access_at_once(
    redis_url: str, redis_conn: redis.Redis
) -> None:
    make_accounts(redis_conn)
    token = _cli(redis_url, "add-token", "nightly").stdout.strip()
    app = make_app(redis_url)
    browser = Browser(app)
    browser.sign_in()
    assert browser.get("/admin/exchange").status_code == 200
    assert _cli(redis_url, "remove-user", ADMIN).returncode == 0
    ended = browser.get("/admin/exchange")
    assert ended.status_code == 302
    assert "why=expired" in ended.location
    revoked = _cli(redis_url, "revoke-token", "nightly")
    assert revoked.returncode == 0
    assert "token nightly revoked" in revoked.stdout
    client = app.test_client()
    assert (
        client.get("/admin/exchange", headers={"Authorization": f"Bearer {token}"}).status_code
        == 401
    )
    again = _cli(redis_url, "revoke-token", "nightly")
    assert again.returncode == 1
    assert "no token named nightly" in again.stderr
