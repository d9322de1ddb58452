"""A delivery the receiver could not queue is queued on its retry, never taken for a duplicate
(found by the chaos suite, seed 13: the delivery id was remembered before the enqueue, Redis went
away between the two, and the sender's retry was answered "duplicate": the change was lost).

Redis "going away" half-way through a request is played by an ACL user that may touch the
receiver's own keys but neither RQ's nor delete anything, as a dead server would refuse. The
receiver claims the delivery id before the enqueue and releases the claim when the enqueue fails;
here Redis refuses the release too, and the claim, short until its job is queued, lapses before
Coconut retries (tests/security/test_coconut_replay.py has the release itself)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator

import pytest
import redis
from flask.testing import FlaskClient

from core import store
from core.settings import load_settings
from tests.harness import COCONUT_WEBHOOK_SECRET
from webhooks.app import create_app
from webhooks.coconut_signature import sign


@pytest.fixture
def crippled_url(redis_url: str, redis_conn: redis.Redis) -> Iterator[str]:
    name, password = f"exsync-test-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    redis_conn.acl_setuser(
        name, enabled=True, passwords=[f"+{password}"], keys=["exsync:*"],
        commands=["+@all", "-del", "-unlink"],
    )  # fmt: skip
    host = redis_url.split("//", 1)[1]
    yield f"redis://{name}:{password}@{host}"
    redis_conn.acl_deluser(name)


def client(url: str) -> FlaskClient:
    settings = load_settings(redis_url=url, coconut_webhook_secret=COCONUT_WEBHOOK_SECRET)
    return create_app(settings).test_client()


def deliver(to: FlaskClient) -> tuple[int, dict]:
    body = json.dumps({"id": "d-7", "type": "appointment.updated",
                       "data": {"type": "appointments", "id": "7"}}).encode()  # fmt: skip
    now = int(time.time())
    answer = to.post("/webhooks/coconut", data=body, headers={
        "Content-Type": "application/json", "X-Coconut-Timestamp": str(now),
        "X-Coconut-Signature": sign(COCONUT_WEBHOOK_SECRET, now, "d-7", body),
        "X-Coconut-Delivery-Id": "d-7",
    })  # fmt: skip
    return answer.status_code, answer.get_json()


def test_a_delivery_that_could_not_be_queued_is_queued_on_its_retry(
    redis_url: str, crippled_url: str, redis_conn: redis.Redis
) -> None:
    status, body = deliver(client(crippled_url))
    assert status == 503 and "retry" in body["reason"]
    assert not redis_conn.exists("rq:job:appointment-7")
    claim = store.delivery_key("coconut", "d-7")
    assert 0 < redis_conn.pttl(claim) <= 30_000, "Coconut's first retry comes 30 s later"
    redis_conn.delete(claim)  # those 30 s pass: the claim has lapsed

    status, body = deliver(client(redis_url))  # the sender retries; Redis is whole again

    assert (status, body["status"]) == (202, "accepted")
    assert redis_conn.exists("rq:job:appointment-7")
    assert deliver(client(redis_url))[1]["status"] == "duplicate"
