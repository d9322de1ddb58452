"""Logs as an interface: JSON lines that parse, a request id on every line the web app writes
while it handles a request (kept from a sane X-Request-Id, echoed back), the RQ job on every
line a worker writes while it runs one, and never a secret, clientState, subject or customer
detail, in any process's log of a real sync."""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import redis

from core import logs
from core.job_kinds import JobKind
from core.settings import load_settings
from tests.harness import (
    COCONUT_CLIENT_SECRET,
    COCONUT_WEBHOOK_SECRET,
    GRAPH_CLIENT_SECRET,
    SECRET_KEY,
    System,
    wait_until,
)
from tests.sync_support import (
    CoconutAdmin,
    Outlook,
    at,
    busy_blocks,
    customer,
    wait_blocks,
    wait_for_events,
)
from webhooks.app import create_app

log = logging.getLogger("tests.logs")
GENERATED = re.compile(r"[0-9a-f]{32}")
USER1, STAFF1 = "user1@contoso.example", 1


def json_lines(text: str) -> list[dict[str, Any]]:
    """Our lines (JSON objects); gunicorn's own and the emulators' lines are not ours."""
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_json_lines_carry_the_bound_job_and_never_a_secret(capsys) -> None:  # type: ignore[no-untyped-def]
    logs.configure("INFO", "json")
    logs.redact("s3cret-value-never-logged")
    with logs.bound(job_id="mailbox-u-1", job=JobKind.SYNC_MAILBOX.path):
        log.info("probe.inside", extra={"mailbox": "u-1", "client_state": "cs-1", "event": "x"})
        log.warning("probe.leaky %s", "token=s3cret-value-never-logged")
    log.info("probe.outside")

    inside, leaky, outside = json_lines(capsys.readouterr().err)
    assert inside["event"] == "probe.inside" and inside["level"] == "INFO"
    assert inside["event_"] == "x"  # an extra never replaces the event name
    assert (inside["job_id"], inside["job"]) == ("mailbox-u-1", JobKind.SYNC_MAILBOX.path)
    assert inside["mailbox"] == "u-1"
    assert inside["client_state"] == logs.REDACTED
    assert leaky["event"] == f"probe.leaky token={logs.REDACTED}"
    assert "job_id" not in outside


def test_a_json_record_is_one_line_whatever_its_values_hold(capsys) -> None:  # type: ignore[no-untyped-def]
    logs.configure("INFO", "json")
    forged = 'x\n{"event": "forged"}\r\u2028\x85\x1b[2K'

    log.info("probe.message %s", forged, extra={"path": forged})
    try:
        raise ValueError(forged)
    except ValueError:
        log.exception("probe.failed")

    message, failed = (json.loads(line) for line in capsys.readouterr().err.splitlines())
    assert (message["event"], message["path"]) == (f"probe.message {forged}", forged)
    assert failed["exception"].endswith(f"ValueError: {forged}")


def test_values_met_on_the_way_are_cut_and_only_the_newest_are_kept(capsys) -> None:  # type: ignore[no-untyped-def]
    """A value met again counts as new: a token still in use is never the one dropped."""
    logs.configure("INFO", "text")
    oldest, in_use = "rotated-away-token-0001", "token-still-in-use-0001"
    logs.redact_rotating(oldest, in_use)
    for n in range(logs._ROTATING_KEPT - 1):
        logs.redact_rotating(f"later-token-{n:05d}")
        if n == 1:
            logs.redact_rotating(in_use)

    log.info("probe.tokens %s %s %s", oldest, in_use, "later-token-00000")

    line = capsys.readouterr().err.rstrip()
    assert line.endswith(f"probe.tokens {oldest} {logs.REDACTED} {logs.REDACTED}")


def test_the_web_app_keeps_a_sane_request_id_and_replaces_any_other(
    redis_url: str,
    capsys,  # type: ignore[no-untyped-def]
) -> None:
    settings = load_settings(
        redis_url=redis_url, coconut_webhook_secret=COCONUT_WEBHOOK_SECRET, log_format="json"
    )
    client = create_app(settings).test_client()
    unknown = {"value": [{"subscriptionId": "not-ours", "clientState": "x"}]}

    kept = client.post("/webhooks/graph", json=unknown, headers={"X-Request-Id": "lb-7f3a.91"})
    forged = client.post("/webhooks/graph", json=unknown,
                         headers={"X-Request-Id": 'x" level=ERROR event=forged'})  # fmt: skip
    bare = client.post("/webhooks/graph", json=unknown)

    assert kept.headers["X-Request-Id"] == "lb-7f3a.91"
    assert GENERATED.fullmatch(forged.headers["X-Request-Id"])
    assert GENERATED.fullmatch(bare.headers["X-Request-Id"])
    assert forged.headers["X-Request-Id"] != bare.headers["X-Request-Id"]
    refused = [e for e in json_lines(capsys.readouterr().err) if e["event"] == "graph.item_refused"]
    assert [e["request_id"] for e in refused] == [
        "lb-7f3a.91", forged.headers["X-Request-Id"], bare.headers["X-Request-Id"],
    ]  # fmt: skip


def test_a_real_sync_logs_ids_and_never_a_secret_subject_or_customer(
    make_system,
    redis_conn: redis.Redis,  # type: ignore[no-untyped-def]
) -> None:
    system: System = make_system(
        graph_args=["--users", "3"], scheduler=True,
        settings={"EXSYNC_LOG_FORMAT": "json", "EXSYNC_SHOW_EVENT_TITLES": "true"},
    )  # fmt: skip
    wait_until(lambda: len(system.graph_state()["subscriptions"]) == 3, 60, what="subscriptions")
    coconut = CoconutAdmin(system)
    start = (datetime.now(UTC) + timedelta(days=3)).replace(hour=15, minute=0, second=0)
    appointment = coconut.book(start.isoformat(), staff_id=STAFF1)
    mark = f"exsync:appointment:{appointment}"
    (projected,) = wait_for_events(system, USER1, mark, 1, timeout=60)
    day = datetime.now(UTC) + timedelta(days=5)
    Outlook(system).create(USER1, subject="Credit committee Q3", start=at(day, 9), end=at(day, 10))
    wait_blocks(system, STAFF1, lambda bs: any(b["title"] == "Credit committee Q3" for b in bs), 60)

    # The OAuth callback's query carries an authorization code; the access line has the path only.
    callback = httpx.get(f"{system.web_url}/admin/exchange/callback?code=0.AUoA-oauth-code&state=s")
    assert callback.status_code in (302, 303, 400, 401, 403)
    access = [line for line in system.processes["web"].log().splitlines() if "callback" in line]
    assert any(callback.headers["X-Request-Id"] in line for line in access), access

    web = json_lines(system.processes["web"].log())
    handled = [e for e in web if e["logger"].startswith("webhooks.")]
    assert handled and all(GENERATED.fullmatch(e.get("request_id", "")) for e in handled)
    worker = json_lines(system.processes["worker-0"].log())
    ours = [e for e in worker if e["logger"].startswith(("workers.", "subscriptions.", "core."))]
    in_jobs = [e for e in worker if "job_id" in e]
    assert {e["job"] for e in in_jobs} >= {
        JobKind.SYNC_APPOINTMENT.path, JobKind.SYNC_MAILBOX.path,
    }  # fmt: skip
    assert [e for e in ours if e["logger"] != "core.audit" and "job_id" not in e] == []

    person = customer(coconut, appointment)
    client_states = [
        redis_conn.hget(key, "client_state").decode()  # type: ignore[union-attr]
        for key in redis_conn.scan_iter("exsync:subscription:*")
    ]
    never = {
        "Graph client secret": GRAPH_CLIENT_SECRET,
        "Coconut client secret": COCONUT_CLIENT_SECRET,
        "Coconut webhook secret": COCONUT_WEBHOOK_SECRET,
        "secret key": SECRET_KEY,
        **{f"clientState {n}": value for n, value in enumerate(client_states)},
        "customer first name": person["first_name"],
        "customer last name": person["last_name"],
        "customer email": person["email"],
        "appointment subject": projected["subject"],
        "Outlook subject": "Credit committee",
        "a bearer token": "Bearer ey",
        "an OAuth authorization code": "0.AUoA-oauth-code",
    }
    assert len(client_states) == 3 and busy_blocks(system, STAFF1)
    text = system.logs()
    assert [name for name, value in never.items() if value in text] == []
