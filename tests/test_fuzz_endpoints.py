"""Fuzzing the three webhook receivers and the admin API: malformed JSON, wrong types, missing
fields, huge bodies, wrong content types, bad signatures and replays. Every answer is a 4xx
with a reason, never a 500, and nothing is enqueued (the app over a real Redis)."""

from __future__ import annotations

import hmac
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core import store
from core.admin_accounts import add_token
from core.settings import load_settings
from tests.harness import COCONUT_WEBHOOK_SECRET, SECRET_KEY, TENANT
from webhooks.app import create_app
from webhooks.coconut_signature import sign

FUZZ = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
SUBSCRIPTION, CLIENT_STATE = "sub-known", "the-client-state"

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                 max_size=4),
    max_leaves=12,
)  # fmt: skip
header_text = st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=40)
path_text = st.text(max_size=40).filter(lambda s: not set(s) & set("/?#%\\"))
content_types = st.sampled_from(
    ["application/json", "application/json; charset=utf-8", "text/plain", "",
     "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "application/xml"]
)  # fmt: skip


@pytest.fixture
def app(redis_url: str) -> Flask:
    settings_ = load_settings(
        redis_url=redis_url, tenant_id=TENANT, coconut_webhook_secret=COCONUT_WEBHOOK_SECRET,
        secret_key=SECRET_KEY, max_body_bytes=65_536,
    )  # fmt: skip
    return create_app(settings_)


@pytest.fixture
def client(app: Flask) -> Iterator[FlaskClient]:
    yield app.test_client()


@pytest.fixture
def conn(redis_url: str) -> Iterator[redis.Redis]:
    conn = redis.Redis.from_url(redis_url)
    yield conn
    conn.close()


def _known_subscription(conn: redis.Redis) -> None:
    conn.hset(store.subscription_key(SUBSCRIPTION),
              mapping={"user_id": "u-1", "client_state": CLIENT_STATE})  # fmt: skip


def assert_refused_and_nothing_queued(answer: Any, conn: redis.Redis) -> None:
    assert 400 <= answer.status_code < 500, (answer.status_code, answer.get_data()[:300])
    body = answer.get_json(silent=True)
    assert isinstance(body, dict) and body.get("reason"), answer.get_data()[:300]
    assert not list(conn.scan_iter(match="rq:job:*", count=1000))
    assert not list(conn.scan_iter(match=store.dirty_key("*", "*"), count=1000))


# ---------------------------------------------------------------- Graph notifications

graph_items = st.fixed_dictionaries(
    {},
    optional={
        "subscriptionId": st.one_of(st.just(SUBSCRIPTION), st.text(max_size=40), json_values),
        "clientState": st.one_of(st.text(max_size=40), json_values),  # never the right one
        "tenantId": st.one_of(st.just(TENANT), st.text(max_size=40)),
        "changeType": st.sampled_from(["created", "updated", "deleted", "bogus"]),
        "resource": st.text(max_size=60),
        "lifecycleEvent": st.sampled_from(
            ["subscriptionRemoved", "missed", "reauthorizationRequired", "other"]
        ),
    },
)
graph_bodies = st.one_of(
    st.binary(max_size=200),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.lists(st.one_of(graph_items, json_values), max_size=5).map(
        lambda items: json.dumps({"value": items}).encode()
    ),
)


@pytest.mark.parametrize("path", ["/webhooks/graph", "/webhooks/graph/lifecycle"])
@FUZZ
@given(body=graph_bodies, content_type=content_types)
def test_graph_receivers_refuse_what_graph_would_never_send(
    client: FlaskClient, conn: redis.Redis, path: str, body: bytes, content_type: str
) -> None:
    conn.flushdb()
    _known_subscription(conn)
    answer = client.post(path, data=body, headers={"Content-Type": content_type})
    assert_refused_and_nothing_queued(answer, conn)


# ---------------------------------------------------------------- Coconut webhooks

DEFECTS = [
    "no signature", "bad signature", "non-ascii signature", "stale", "future", "bad timestamp",
    "content type", "body", "no delivery id", "long delivery id", "other delivery id",
    "v1 signature",
]  # fmt: skip


def coconut_delivery(kind: str = "appointment.created", item: Any = "42") -> dict[str, Any]:
    data_type = {"appointment": "appointments", "absence": "absences", "user": "users"}
    return {"id": "d-1", "type": kind, "created_at": "2026-12-01T00:00:00Z",
            "data": {"type": data_type.get(kind.split(".")[0], "x"), "id": item}}  # fmt: skip


coconut_bodies = st.one_of(
    st.binary(max_size=200),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.builds(
        coconut_delivery,
        kind=st.sampled_from(["appointment.created", "absence.deleted", "user.updated", "nope"]),
        item=st.one_of(json_values, st.text(max_size=30), st.integers()),
    ).map(lambda d: json.dumps(d).encode()),
)


def coconut_headers(body: bytes, defect: str, content_type: str, now: int) -> dict[str, str]:
    stamp = {"stale": now - 3600, "future": now + 3600}.get(defect, now)
    delivery_id = "x" * 200 if defect == "long delivery id" else "d-1"
    headers = {
        "Content-Type": content_type if defect == "content type" else "application/json",
        "X-Coconut-Timestamp": "yesterday" if defect == "bad timestamp" else str(stamp),
        "X-Coconut-Signature": sign(COCONUT_WEBHOOK_SECRET, stamp, delivery_id, body),
        "X-Coconut-Delivery-Id": delivery_id,
    }
    if defect == "no signature":
        del headers["X-Coconut-Signature"]
    if defect == "bad signature":
        other = "another-secret-entirely-0123456789"
        headers["X-Coconut-Signature"] = sign(other, stamp, delivery_id, body)
    if defect == "non-ascii signature":
        headers["X-Coconut-Signature"] = "v2=é" + "0" * 63
    if defect == "v1 signature":  # right by the scheme before, which left the delivery id out
        old = hmac.new(COCONUT_WEBHOOK_SECRET.encode(), f"{stamp}.".encode() + body, "sha256")
        headers["X-Coconut-Signature"] = "v1=" + old.hexdigest()
    if defect == "no delivery id":
        del headers["X-Coconut-Delivery-Id"]
    if defect == "other delivery id":  # a captured delivery replayed under a new id
        headers["X-Coconut-Delivery-Id"] = "d-2"
    return headers


@FUZZ
@given(
    body=coconut_bodies,
    defect=st.sampled_from(DEFECTS),
    content_type=content_types.filter(lambda c: not c.startswith("application/json")),
)
def test_the_coconut_receiver_refuses_every_defective_delivery(
    client: FlaskClient, conn: redis.Redis, body: bytes, defect: str, content_type: str
) -> None:
    conn.flushdb()
    if defect == "body":  # a valid signature over a body that is no delivery we act on
        body = b"{" + body
    headers = coconut_headers(body, defect, content_type, int(time.time()))
    answer = client.post("/webhooks/coconut", data=body, headers=headers)
    assert_refused_and_nothing_queued(answer, conn)


def test_a_replayed_coconut_delivery_queues_nothing_more(
    client: FlaskClient, conn: redis.Redis
) -> None:
    body = json.dumps(coconut_delivery()).encode()
    first = client.post("/webhooks/coconut", data=body,
                        headers=coconut_headers(body, "", "", int(time.time())))  # fmt: skip
    assert first.status_code == 202
    jobs_after_first = sorted(conn.scan_iter(match="rq:job:*"))
    again = client.post("/webhooks/coconut", data=body,
                        headers=coconut_headers(body, "", "", int(time.time())))  # fmt: skip
    # Coconut redelivers the same delivery id until it gets a 2xx: a copy is acknowledged.
    assert (again.status_code, again.get_json()["status"]) == (200, "duplicate")
    stale = client.post("/webhooks/coconut", data=body,
                        headers=coconut_headers(body, "stale", "", int(time.time())))  # fmt: skip
    assert stale.status_code == 401 and "tolerance" in stale.get_json()["reason"]
    assert sorted(conn.scan_iter(match="rq:job:*")) == jobs_after_first


# ---------------------------------------------------------------- the admin API

ADMIN_CALLS = [
    ("GET", "/admin/api/users"), ("GET", "/admin/subscriptions"),
    ("POST", "/admin/subscriptions"), ("DELETE", "/admin/subscriptions/{id}"),
    ("GET", "/admin/holds"), ("POST", "/admin/holds/{id}/release"),
    ("POST", "/admin/holds/{id}/discard"), ("POST", "/admin/holds/{id}/{id}"),
]  # fmt: skip


@FUZZ
@given(call=st.sampled_from(ADMIN_CALLS), token=header_text, ident=path_text,
       body=st.binary(max_size=100))  # fmt: skip
def test_the_admin_api_refuses_unknown_tokens(
    client: FlaskClient, conn: redis.Redis, call: tuple[str, str], token: str, ident: str,
    body: bytes,
) -> None:  # fmt: skip
    conn.flushdb()
    method, path = call
    answer = client.open(
        path.replace("{id}", ident or "x"), method=method, data=body,
        headers={"Authorization": f"Bearer {token or 'x'}", "Accept": "application/json"},
    )  # fmt: skip
    assert answer.status_code in (401, 404, 405), answer.status_code
    assert not list(conn.scan_iter(match="rq:job:*"))


@FUZZ
@given(
    call=st.sampled_from([c for c in ADMIN_CALLS if c[0] != "GET"]),
    ident=path_text.filter(bool),
    body=st.one_of(st.binary(max_size=100), json_values.map(lambda v: json.dumps(v).encode()),
                   st.fixed_dictionaries({}, optional={"user": json_values, "all": json_values})
                   .map(lambda v: json.dumps(v).encode())),
    content_type=content_types,
)  # fmt: skip
def test_the_admin_api_answers_bad_requests_with_a_reason(
    client: FlaskClient, conn: redis.Redis, call: tuple[str, str], ident: str, body: bytes,
    content_type: str,
) -> None:  # fmt: skip
    conn.flushdb()
    token = add_token(conn, "fuzz")
    method, path = call
    answer = client.open(
        path.replace("{id}", ident), method=method, data=body,
        headers={"Authorization": f"Bearer {token}", "Content-Type": content_type,
                 "Accept": "application/json"},
    )  # fmt: skip
    if answer.status_code == 202:  # {"all": true} is a real request: subscribe everyone
        assert json.loads(body).get("all") in (True, "true", "1")
        return
    assert_refused_and_nothing_queued(answer, conn)


# ---------------------------------------------------------------- huge bodies


@pytest.mark.parametrize(
    "path", ["/webhooks/graph", "/webhooks/graph/lifecycle", "/webhooks/coconut",
             "/admin/subscriptions"],
)  # fmt: skip
def test_a_body_over_the_limit_is_413_with_a_reason(
    client: FlaskClient, conn: redis.Redis, path: str
) -> None:
    token = add_token(conn, "huge")
    huge = b'{"value": [' + b'{"a": 1},' * 20_000 + b'{"a": 1}]}'
    answer = client.post(path, data=huge, headers={"Content-Type": "application/json",
                                                   "Authorization": f"Bearer {token}"})  # fmt: skip
    assert answer.status_code == 413
    assert "reason" in answer.get_json()
    assert not list(conn.scan_iter(match="rq:job:*"))
