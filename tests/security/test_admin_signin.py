"""Finding 3: sign-in throttling that an attacker cannot turn against the admin.

Wrong passwords from one address must not keep the admin out from another; spraying an account
from many addresses slows it down but keeps its admin out for a minute at most, and not at all
where they signed in before; a huge email is refused before it reaches a pattern or a Redis
key; racing attempts get no more tries than the allowance (the count is taken before the
password is checked).
"""

from __future__ import annotations

import threading
import time

import redis
from flask import Flask

from tests.test_admin_support import ADMIN, Browser, make_accounts, make_app

ATTACKER = "198.51.100.7"
ADMINS_DESK = "203.0.113.9"
WRONG = "not-the-password"


def browser_at(app: Flask, address: str) -> Browser:
    browser = Browser(app)
    browser.client.environ_base["REMOTE_ADDR"] = address
    return browser


def test_wrong_passwords_from_one_address_do_not_keep_the_admin_out_from_another(
    redis_url: str, redis_conn: redis.Redis
) -> None:
    make_accounts(redis_conn)
    app = make_app(redis_url)
    attacker = browser_at(app, ATTACKER)
    answers = [attacker.sign_in(ADMIN, WRONG).status_code for _ in range(30)]
    assert set(answers) <= {401, 429}
    admin = browser_at(app, ADMINS_DESK)
    assert admin.sign_in().status_code == 303
    assert admin.get("/admin/exchange").status_code == 200


def test_spraying_from_many_addresses_keeps_the_admin_out_for_a_minute_at_most(
    redis_url: str, redis_conn: redis.Redis
) -> None:
    make_accounts(redis_conn)
    app = make_app(redis_url)
    answers = [
        browser_at(app, f"198.51.100.{n}").sign_in(ADMIN, WRONG).status_code for n in range(1, 41)
    ]
    assert 429 in answers, "spraying one account from many addresses is never slowed"
    admin = browser_at(app, ADMINS_DESK)
    first = admin.sign_in()
    if first.status_code == 429:
        assert "Retry-After" in first.headers, "the admin is refused with no end given"
        wait = int(first.headers["Retry-After"])
        assert wait <= 60
        time.sleep(wait)
        assert admin.sign_in().status_code == 303
    else:
        assert first.status_code == 303
    assert admin.get("/admin/exchange").status_code == 200


def test_spraying_does_not_slow_the_admin_at_all_where_they_signed_in_before(
    redis_url: str, redis_conn: redis.Redis
) -> None:
    make_accounts(redis_conn)
    app = make_app(redis_url)
    assert browser_at(app, ADMINS_DESK).sign_in().status_code == 303  # yesterday, say
    answers = [
        browser_at(app, f"198.51.100.{n}").sign_in(ADMIN, WRONG).status_code for n in range(1, 41)
    ]
    assert 429 in answers, "spraying one account from many addresses is never slowed"
    admin = browser_at(app, ADMINS_DESK)
    assert admin.sign_in().status_code == 303
    assert admin.get("/admin/exchange").status_code == 200


def test_a_megabyte_email_writes_no_big_key_and_is_refused_at_once(
    redis_url: str, redis_conn: redis.Redis
) -> None:
    make_accounts(redis_conn)
    browser = browser_at(make_app(redis_url), ATTACKER)
    started = time.monotonic()
    response = browser.sign_in("a" * 1_000_000 + "@bank.example", WRONG)
    assert time.monotonic() - started < 2
    assert response.status_code in (400, 401)
    for key in redis_conn.scan_iter(count=1000):
        assert len(key) <= 1024, f"a {len(key)}-byte key: {key[:60]!r}..."
        assert (redis_conn.memory_usage(key) or 0) < 64 * 1024, key[:60]
    assert len(response.get_data()) < 64 * 1024, "the page echoes the megabyte back"


def test_an_email_made_to_backtrack_is_refused_at_once(
    redis_url: str, redis_conn: redis.Redis
) -> None:
    """`a@a.a.a…<TAB>b` makes an unanchored-length email pattern try every split: quadratic."""
    make_accounts(redis_conn)
    browser = browser_at(make_app(redis_url), ATTACKER)
    started = time.monotonic()
    response = browser.sign_in("a@" + "a." * 20_000 + "\tb", WRONG)
    assert time.monotonic() - started < 2
    assert response.status_code in (400, 401)


def test_racing_wrong_passwords_get_no_more_tries_than_the_allowance(
    redis_url: str, redis_conn: redis.Redis
) -> None:
    """Twenty attempts at once from one address: at most ten (the most any rule here ever
    allowed) may reach the password check; the rest must be turned away."""
    make_accounts(redis_conn)
    app = make_app(redis_url)
    browsers = [browser_at(app, ATTACKER) for _ in range(20)]
    for browser in browsers:
        browser.get("/admin/sign-in")  # each its own session and CSRF token, as a script would
    start = threading.Barrier(len(browsers))
    answers: list[int] = []

    def attempt(browser: Browser) -> None:
        start.wait()
        answer = browser.post("/admin/sign-in", {"email": ADMIN, "password": WRONG})
        answers.append(answer.status_code)

    threads = [threading.Thread(target=attempt, args=(b,)) for b in browsers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(answers) == len(browsers)
    checked = answers.count(401)
    assert checked <= 10, f"{checked} wrong passwords were checked at once"
    assert answers.count(429) == len(browsers) - checked
