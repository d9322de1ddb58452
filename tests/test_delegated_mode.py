"""Impersonation off: the workers act as the service account on the calendars shared with it,
with the delegated token from Authorize, refreshed through Redis; a revoked refresh token turns
the connection to "re-authorize needed" instead of failing in silence.

The admin configures and authorizes through the admin pages (in-process Flask, same Redis) at
the Graph emulator's sign-in; the running workers pick the stored connection up.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import redis

from core import connection
from core.connection import Status
from tests.harness import SECRET_KEY, System, wait_until
from tests.sync_support import CoconutAdmin, marked_events, user_id, wait_for_events
from tests.test_admin_authorize import (
    Emulator,
    Setup,
    configure,
    sign_in_at_emulator,
    start_authorize,
)
from tests.test_admin_support import Browser, make_accounts, make_app

SERVICE_ACCOUNT = "sync@contoso.example"
TORONTO = ZoneInfo("America/Toronto")


def authorize_delegated(system: System, redis_url: str, conn: redis.Redis) -> None:
    with system.graph_http() as http:
        http.post("/_emulator/users", json={"mail": SERVICE_ACCOUNT}).raise_for_status()
    make_accounts(conn)
    app = make_app(
        redis_url,
        secret_key=SECRET_KEY,
        cloud_override_graph_url=f"{system.graph_base}/v1.0",
        cloud_override_authority=system.graph_base,
        graph_ca_file=str(system.ca_file),
    )
    browser = Browser(app)
    browser.sign_in()
    setup = Setup(browser, SECRET_KEY, Emulator(system.graph_base, str(system.ca_file)))
    configure(setup, service_account=SERVICE_ACCOUNT)  # impersonation left off
    callback = sign_in_at_emulator(setup, start_authorize(setup), SERVICE_ACCOUNT)
    assert browser.get(callback).status_code == 303
    stored = connection.load(conn)
    assert stored.status == Status.CONNECTED and not stored.impersonation


def share(system: System, owner: str) -> None:
    with system.graph_http() as http:
        body = {"owner": user_id(system, owner), "delegate": user_id(system, SERVICE_ACCOUNT)}
        http.post("/_emulator/shares", json={**body, "role": "write"}).raise_for_status()


def test_delegated_mode_writes_shared_calendars_only_and_asks_to_reauthorize(
    make_system,
    redis_url: str,
    redis_conn: redis.Redis,  # type: ignore[no-untyped-def]
) -> None:
    system = make_system(graph_args=["--users", "3"])
    authorize_delegated(system, redis_url, redis_conn)
    share(system, "user1@contoso.example")
    coconut = CoconutAdmin(system)
    day = datetime.now(TORONTO) + timedelta(days=15)
    start = day.replace(hour=10, minute=0, second=0, microsecond=0).isoformat()

    shared = coconut.book(start, staff_id=1)
    wait_for_events(system, "user1@contoso.example", f"exsync:appointment:{shared}", 1)

    # user2 never shared a calendar with the service account: Exchange refuses, and the staff
    # member's row says so (an app-only token would have written it).
    unshared = coconut.book(start, staff_id=2)
    error = wait_until(lambda: redis_conn.hget("exsync:staff:2", "error"), 30, what="the error")
    assert b"403" in error and b"lacks Author permission on this calendar" in error
    assert marked_events(system, "user2@contoso.example", f"exsync:appointment:{unshared}") == []

    # The service account's sessions are revoked: the next refresh is refused, and the
    # connection says "re-authorize" rather than every job failing quietly.
    with system.graph_http() as http:
        assert http.post("/_emulator/tokens/revoke").json()["revoked"] >= 1
    redis_conn.delete(connection.DELEGATED_TOKEN_KEY)  # the cached access token has run out
    coconut.change(shared, start=day.replace(hour=14, minute=0).isoformat())
    wait_until(
        lambda: connection.load(redis_conn).status == Status.REAUTHORIZE, 60,
        what="the connection to need re-authorizing",
    )  # fmt: skip
    assert "refresh_token" not in {k.decode() for k in redis_conn.hkeys(connection.CONNECTION_KEY)}
    coconut.http.close()
