"""webhooks/openapi.yaml describes the web app's own endpoints, and the running app keeps to it.

The document served at /openapi.json is valid OpenAPI 3.1 and names every route but the admin
HTML pages. Schemathesis then fuzzes the live app (gunicorn, real Redis, the Graph emulator
behind /readyz) from that document, without credentials and with an admin bearer token,
checking that nothing answers 5xx and that every status, content type, header and body is the
documented one. Coconut deliveries are signed (tests/schemathesis_hooks.py) so the fuzzing
reaches the guards behind the signature. A failure prints schemathesis' report with the seed
and a curl line to reproduce it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import redis
import yaml
from openapi_spec_validator import validate

from core import store
from core.admin_accounts import add_token
from core.settings import load_settings
from core.staff_status import ROSTER_KEY
from tests.harness import System
from webhooks.app import create_app
from webhooks.coconut_signature import sign

ROOT = Path(__file__).parent.parent
SPEC = ROOT / "webhooks" / "openapi.yaml"
CHECKS = (
    "not_a_server_error,status_code_conformance,content_type_conformance,"
    "response_schema_conformance,response_headers_conformance"
)
MAX_EXAMPLES = "30"  # per operation: about 40 s a run on 2 shared cores
# The admin pages are HTML for browsers (tests/test_admin_*.py), not part of the API.
ADMIN_PAGES = {
    "admin_auth.sign_in", "admin_auth.sign_out", "admin_exchange.home",
    "admin_exchange.configuration", "admin_exchange.save", "admin_exchange.start_authorize",
    "admin_exchange.callback", "admin_exchange.wrong_account", "admin_users.users",
    "admin_users.resync",
    "admin_users.override_mailbox", "admin_users.set_enabled", "admin_users.recheck",
    "admin_disconnect.confirm", "admin_disconnect.disconnect", "static",
}  # fmt: skip
# The examples in the document, made real so the fuzzing reaches past "not found".
SUBSCRIPTION = "7f105c7d-2dc5-4530-97cd-4e7ae6534c07"
MAILBOX = "52c2f8ab-4b7e-4a5c-9b0f-0d9a1c2e3f40"
CLIENT_STATE = "the-secret-given-when-subscribing"
WEBHOOK_SECRET = "whsec-odd-input-0123456789abcdef-0123"


def test_the_served_document_is_valid_openapi_3_1_in_json_and_yaml(redis_url: str) -> None:
    settings = load_settings(redis_url=redis_url, coconut_webhook_secret=WEBHOOK_SECRET)
    client = create_app(settings).test_client()
    as_json = client.get("/openapi.json")
    as_yaml = client.get("/openapi.yaml")
    assert as_json.status_code == as_yaml.status_code == 200
    assert as_yaml.content_type == "application/yaml"
    document = as_json.get_json()
    validate(document)  # raises on anything that is not valid OpenAPI
    assert document["openapi"] == "3.1.0"
    assert yaml.safe_load(as_yaml.get_data(as_text=True)) == document


def test_every_route_but_the_admin_pages_is_described_and_nothing_else(redis_url: str) -> None:
    app = create_app(load_settings(redis_url=redis_url, coconut_webhook_secret=WEBHOOK_SECRET))
    routes = {
        (re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule.rule), method.lower())
        for rule in app.url_map.iter_rules()
        if rule.endpoint not in ADMIN_PAGES
        for method in rule.methods or ()
        if method not in ("HEAD", "OPTIONS")
    }
    document = app.test_client().get("/openapi.json").get_json()
    described = {(path, method) for path, item in document["paths"].items() for method in item}
    assert routes == described


NOW = "{now}"  # replaced by the current unix time when sent


@pytest.mark.parametrize(
    ("path", "body", "headers", "status"),
    [
        # Another script's digits pass str.isdigit() but not an RQ job id.
        ("/admin/subscriptions", {"user": "\uff11\uff17"}, {}, 400),
        ("/webhooks/graph/lifecycle", {"value": [{"lifecycleEvent": []}]}, {}, 400),
        ("/webhooks/coconut", {},
         {"X-Coconut-Signature": "v2=\u00e9", "X-Coconut-Timestamp": NOW,
          "X-Coconut-Delivery-Id": "odd-1"}, 401),
        ("/webhooks/coconut", {},
         {"X-Coconut-Signature": "v2=ab", "X-Coconut-Timestamp": "9" * 400,
          "X-Coconut-Delivery-Id": "odd-1"}, 401),
        ("/webhooks/coconut",
         {"type": "appointment.updated", "data": {"type": "appointments", "id": "\u0661"}},
         None, 400),
    ],
    ids=["fullwidth-staff-id", "list-lifecycle-event", "non-ascii-signature",
         "huge-timestamp", "arabic-indic-appointment-id"],
)  # fmt: skip
def test_odd_input_is_answered_as_documented_never_500(
    redis_url: str, path: str, body: dict, headers: dict[str, str] | None, status: int
) -> None:
    """Inputs the fuzzing rarely generates, each once a 500. `headers=None`: signed."""
    app = create_app(load_settings(redis_url=redis_url, coconut_webhook_secret=WEBHOOK_SECRET))
    token = add_token(redis.Redis.from_url(redis_url), "odd-input")
    raw, now = json.dumps(body).encode(), str(int(time.time()))
    if headers is None:
        signature = sign(WEBHOOK_SECRET, int(now), "odd-1", raw)
        headers = {"X-Coconut-Signature": signature, "X-Coconut-Delivery-Id": "odd-1",
                   "X-Coconut-Timestamp": NOW}  # fmt: skip
    sent = {name: now if value == NOW else value for name, value in headers.items()}
    answer = app.test_client().post(
        path, data=raw, content_type="application/json",
        headers={"Authorization": f"Bearer {token}", **sent},
    )  # fmt: skip
    assert answer.status_code == status, answer.get_data(as_text=True)
    if status >= 400:
        assert set(answer.get_json()) == {"error", "reason"}


def test_schemathesis_finds_nothing_without_credentials(make_system, redis_conn) -> None:  # type: ignore[no-untyped-def]
    system = make_system(workers=0)
    seed(redis_conn)
    run_schemathesis(system)


def test_schemathesis_finds_nothing_with_an_admin_token(make_system, redis_conn) -> None:  # type: ignore[no-untyped-def]
    system = make_system(workers=0)
    seed(redis_conn)
    token = add_token(redis_conn, "schemathesis")
    run_schemathesis(system, "--header", f"Authorization: Bearer {token}")
    # The token reached the admin API's answers, not only its 401s.
    listed = httpx.get(
        f"{system.web_url}/admin/api/users", headers={"Authorization": f"Bearer {token}"}
    )
    assert listed.status_code == 200 and listed.json()["users"][0]["staff_id"] == "17"


def seed(conn: redis.Redis) -> None:
    """A staff member with a subscribed mailbox and held removals, as the document's examples
    name them, so examples and fuzzing meet real records."""
    roster = {"name": "Sam Staff", "email": "sam@bank.example", "takes_appointments": True}
    conn.hset(ROSTER_KEY, "17", json.dumps(roster))
    conn.hset(store.staff_key("17"), mapping={"user_id": MAILBOX, "address": roster["email"]})
    conn.hset(store.mailbox_key(MAILBOX), mapping={"staff_id": "17", "address": roster["email"]})
    conn.hset(
        store.subscription_key(SUBSCRIPTION),
        mapping={"user_id": MAILBOX, "client_state": CLIENT_STATE,
                 "expires_at": time.time() + 3 * 86_400},
    )  # fmt: skip
    conn.sadd(store.held_key(MAILBOX), "event-1", "event-2")
    conn.hset(store.mailbox_key(MAILBOX), "held_removals", 2)


def run_schemathesis(system: System, *extra: str) -> None:
    env = {
        **system.env,
        "SCHEMATHESIS_HOOKS": "tests.schemathesis_hooks",
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run(
        [sys.executable, "-m", "schemathesis.cli", "run", f"{system.web_url}/openapi.json",
         "--checks", CHECKS, "--max-examples", MAX_EXAMPLES, "--max-redirects", "0",
         "--phases", "examples,coverage,fuzzing",
         "--request-timeout", "30", "--no-color", *extra],
        env=env, cwd=system.tmp, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    report = done.stdout[-12_000:] + done.stderr[-3_000:]
    assert done.returncode == 0, report
    operations = sum(len(item) for item in yaml.safe_load(SPEC.read_text())["paths"].values())
    # Every operation but the document's own URL, which schemathesis leaves out.
    assert re.search(rf"Tested: {operations - 1}\b", done.stdout), report
