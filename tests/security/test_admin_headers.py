"""Finding 7: every admin answer forbids framing, inline script, sniffing, leaking its address
to other sites and being cached: pages, the admin API, redirects and refusals alike."""

from __future__ import annotations

import redis
from werkzeug.test import TestResponse

from core import admin_accounts
from tests.test_admin_support import (
    ADMIN,
    HTML,
    STAFF,
    Browser,
    make_accounts,
    make_app,
    valid_settings,
)

JSON = {"Accept": "application/json"}


def assert_protected(response: TestResponse, what: str) -> None:
    policy = response.headers.get("Content-Security-Policy", "")
    directives = {d.strip().split(" ")[0]: d.strip() for d in policy.split(";") if d.strip()}
    assert directives.get("default-src") == "default-src 'self'", what
    assert directives.get("frame-ancestors") == "frame-ancestors 'none'", what
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy, what
    assert response.headers.get("X-Content-Type-Options") == "nosniff", what
    assert response.headers.get("Referrer-Policy") in ("no-referrer", "same-origin"), what
    assert "no-store" in response.headers.get("Cache-Control", ""), what


def test_every_admin_page_and_api_answer_carries_the_security_headers(
    redis_url: str, redis_conn: redis.Redis
) -> None:
    make_accounts(redis_conn)
    app = make_app(redis_url)
    admin = Browser(app)
    assert_protected(admin.get("/admin/sign-in"), "the sign-in page")
    assert_protected(admin.post("/admin/sign-in", {"email": ADMIN, "password": "x"}), "401")
    signed_in = admin.sign_in()
    assert_protected(signed_in, "the redirect after signing in")
    pages = sorted(
        rule.rule for rule in app.url_map.iter_rules()
        if rule.rule.startswith("/admin") and "GET" in (rule.methods or ()) and not rule.arguments
    )  # fmt: skip
    assert "/admin/exchange/users" in pages
    for path in pages:
        assert_protected(admin.get(path), f"GET {path} (signed in, as a page)")
        assert_protected(admin.client.get(path, headers=JSON), f"GET {path} (signed in, as JSON)")
    assert_protected(admin.post("/admin/exchange", valid_settings(), csrf=False), "CSRF 400")
    assert_protected(admin.get("/admin/no-such-page"), "404")
    assert_protected(admin.post("/admin/sign-out", {}), "signing out")

    stranger = app.test_client()
    assert_protected(stranger.get("/admin/exchange", headers=HTML), "signed out, redirected")
    assert_protected(stranger.get("/admin/exchange", headers=JSON), "signed out, 401")
    teller = Browser(app)
    teller.sign_in(STAFF)
    assert_protected(teller.get("/admin/exchange"), "403 for a staff account")
    token = admin_accounts.add_token(redis_conn, "deploy")
    bearer = {"Authorization": f"Bearer {token}", **JSON}
    assert_protected(stranger.get("/admin/api/users", headers=bearer), "the admin API")
