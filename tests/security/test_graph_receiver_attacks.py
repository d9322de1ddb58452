"""Attacks on the Graph receivers (security review, issue 19), through the public surface only:
the app's Flask test client over the real Redis, subscription records written with plain Redis
commands as subscriptions.manager writes them.

- Amplification (finding 2): an unauthenticated POST of thousands of made-up items must not cost
  a Redis call and a log line each: it took 9 s, 37,000 calls and 37,000 lines.
- Half-written records (finding 11): a record without a clientState or a mailbox is no
  subscription of ours yet; `clientState: ""` must not match it, nor may it answer a 5xx.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from core import store
from core.settings import load_settings
from tests.harness import COCONUT_WEBHOOK_SECRET
from tests.receiver_support import refused
from webhooks.app import create_app

NOTIFY, LIFECYCLE = "/webhooks/graph", "/webhooks/graph/lifecycle"
SUBSCRIPTION, MAILBOX = (
    "0a7f2c64-9d3e-4b1a-8f5c-6e2d1b0a9c8f",
    "5c2e0f7a-3b1d-4e6f-8a9b-0c1d2e3f4a5b",
)
CLIENT_STATE = "q3Jx0m8Vb2c9ZkP1sT4uW7yA5dF6gH8jK0lN2pR4tVx"
# Room for 37,000 lifecycle items; the default 1 MiB already holds 37,000 change items.
MAX_BODY = 2 * 1024 * 1024
FLOOD = 37_000  # the review's POST: 1 MB of made-up subscription ids
# Graph's own batches stay under a few hundred: so many items are looked up, not refused whole.
BURST, DISTINCT = 300, 100


@dataclass
class Wire:
    """What the app sent Redis: each send one round trip (redis-py reads all of a send's
    replies before it sends again), each RESP array in it one command."""

    round_trips: int = 0
    commands: int = 0


@pytest.fixture
def app(redis_url: str) -> Flask:
    settings = load_settings(
        redis_url=redis_url, coconut_webhook_secret=COCONUT_WEBHOOK_SECRET, max_body_bytes=MAX_BODY
    )
    return create_app(settings)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def wire(app: Flask) -> Wire:
    """Counts what the app's Redis client sends from here on, its connection already open."""
    seen = Wire()

    class Counted(redis.Connection):
        def send_packed_command(self, command: Any, check_health: bool = True) -> None:
            sent = b"".join([command] if isinstance(command, bytes) else command)
            seen.round_trips += 1
            seen.commands += commands_in(sent)
            super().send_packed_command(command, check_health)

    conn = app.extensions["exsync"].redis
    conn.connection_pool.connection_class = Counted
    conn.ping()  # connects (and says hello) before the count starts
    assert seen.round_trips > 0, "the app's client did not go through the counter"
    seen.round_trips = seen.commands = 0
    return seen


def commands_in(sent: bytes) -> int:
    """How many commands these RESP bytes hold: each an array header `*n` and n bulk strings."""
    count = at = 0
    while at < len(sent):
        at, args = header(sent, at)
        for _ in range(args):
            at, size = header(sent, at)
            at += size + 2  # the string and its CRLF
        count += 1
    return count


def header(sent: bytes, at: int) -> tuple[int, int]:
    """(where the next part starts, the number) of the `*n` or `$n` header at `at`."""
    end = sent.index(b"\r\n", at)
    return end + 2, int(sent[at + 1 : end])


def post(client: FlaskClient, path: str, items: list[dict[str, Any]]) -> Any:
    body = json.dumps({"value": items}, separators=(",", ":")).encode()
    return client.post(path, data=body, headers={"Content-Type": "application/json"})


def made_up(path: str, count: int, distinct: int) -> list[dict[str, Any]]:
    """`count` items naming `distinct` subscriptions nobody made, as short as they can be."""
    lifecycle = {"lifecycleEvent": "missed"} if path == LIFECYCLE else {}
    return [{"subscriptionId": f"{n % distinct:05}", **lifecycle} for n in range(count)]


def ours(path: str, **fields: Any) -> dict[str, Any]:
    """An item naming the subscription the record under test was written for."""
    lifecycle = {"lifecycleEvent": "reauthorizationRequired"} if path == LIFECYCLE else {}
    return {"subscriptionId": SUBSCRIPTION, **lifecycle, **fields}


# ---------------------------------------------------------------- amplification (finding 2)


@pytest.mark.parametrize("path", [NOTIFY, LIFECYCLE])
def test_a_flood_of_made_up_items_is_refused_whole_before_redis_is_asked(
    client: FlaskClient, wire: Wire, unchanged: None, caplog: pytest.LogCaptureFixture, path: str
) -> None:
    items = made_up(path, FLOOD, FLOOD)
    caplog.clear()

    started = time.perf_counter()
    answer = post(client, path, items)
    elapsed = time.perf_counter() - started

    assert (wire.round_trips, wire.commands) == (0, 0)
    assert len(caplog.records) <= 1, [r.getMessage() for r in caplog.records[:3]]
    assert elapsed < 1.0, f"{elapsed:.1f} s: Graph gives up on an endpoint after 3"
    refused(answer, 413, f"{FLOOD} notifications in one POST")


@pytest.mark.parametrize("path", [NOTIFY, LIFECYCLE])
def test_a_burst_of_unknown_subscriptions_costs_one_lookup_and_one_log_line(
    client: FlaskClient, wire: Wire, unchanged: None, caplog: pytest.LogCaptureFixture, path: str
) -> None:
    items = made_up(path, BURST, DISTINCT)  # each subscription named three times
    caplog.clear()

    answer = post(client, path, items)

    assert (wire.round_trips, wire.commands) == (1, DISTINCT)
    assert len(caplog.records) == 1, [r.getMessage() for r in caplog.records[:3]]
    assert getattr(caplog.records[0], "refused", None) == {"unknown subscription": BURST}
    refused(answer, 403, "unknown subscription")


# ---------------------------------------------------------------- half-written records (finding 11)


def record(**fields: object) -> dict[str, object]:
    """Our record of SUBSCRIPTION as subscriptions.manager.create writes it, with `fields`
    changed (None leaves one out)."""
    now = time.time()
    full = {"user_id": MAILBOX, "client_state": CLIENT_STATE, "resource": f"users/{MAILBOX}/events",
            "expires_at": now + 86_400, "renew_at": now + 3_600, "created_at": now}  # fmt: skip
    return {k: v for k, v in {**full, **fields}.items() if v is not None}


@pytest.fixture
def written(request: pytest.FixtureRequest, redis_conn: redis.Redis) -> None:
    """The record under test in Redis, before `unchanged` takes its picture."""
    redis_conn.hset(store.subscription_key(SUBSCRIPTION), mapping=request.param)
    redis_conn.set(store.subscription_of_key(MAILBOX), SUBSCRIPTION)


WITHOUT_CLIENT_STATE = {
    "no client_state": record(client_state=None),
    "empty client_state": record(client_state=""),
    # what renew's or adopt's HSET leaves of a record deleted meanwhile
    "expiry fields only": {"expires_at": time.time() + 86_400, "renew_at": time.time() + 3_600},
}


@pytest.mark.parametrize("path", [NOTIFY, LIFECYCLE])
@pytest.mark.parametrize(
    "written", list(WITHOUT_CLIENT_STATE.values()), ids=list(WITHOUT_CLIENT_STATE), indirect=True
)
def test_a_record_without_a_client_state_is_no_subscription_of_ours(
    client: FlaskClient, written: None, unchanged: None, path: str
) -> None:
    refused(post(client, path, [ours(path, clientState="")]), 403, "unknown subscription")


@pytest.mark.parametrize("path", [NOTIFY, LIFECYCLE])
@pytest.mark.parametrize("written", [record(user_id=None)], ids=["no user_id"], indirect=True)
def test_a_record_without_a_mailbox_is_a_403_not_a_500(
    client: FlaskClient, written: None, unchanged: None, path: str
) -> None:
    answer = post(client, path, [ours(path, clientState=CLIENT_STATE)])
    refused(answer, 403, "unknown subscription")


# ---------------------------------------------------------------- text that is no text


@pytest.mark.parametrize("path", [NOTIFY, LIFECYCLE])
def test_a_subscription_id_with_a_lone_surrogate_is_a_400_not_a_500(
    client: FlaskClient, unchanged: None, path: str
) -> None:
    answer = post(client, path, [ours(path, subscriptionId="\ud800", clientState="x")])
    refused(answer, 400, "missing subscriptionId")


@pytest.mark.parametrize("path", [NOTIFY, LIFECYCLE])
@pytest.mark.parametrize("written", [record()], ids=["whole record"], indirect=True)
def test_a_client_state_with_a_lone_surrogate_is_a_403_not_a_500(
    client: FlaskClient, written: None, unchanged: None, path: str
) -> None:
    answer = post(client, path, [ours(path, clientState="\ud800")])
    refused(answer, 403, "clientState mismatch")
