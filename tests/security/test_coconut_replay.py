"""Finding 5: `X-Coconut-Delivery-Id` was not signed. The HMAC covered the timestamp and the body
(`v1=`) and the receiver deduplicated on the delivery id, so a captured delivery replayed under a
new id within the 5-minute window was accepted again. And the dedupe was a check, then the
enqueue, then a write: two copies of one delivery arriving together were both accepted.

Signatures are computed here with hmac, from the contract (core/coconut/openapi.yaml,
`webhooks.coconutEvent`), never with the receiver's own code. Where a delivery must be accepted,
its header carries a `v2=` value beside a `v1=` one, as a sender in the middle of a change of
scheme sends them: the receiver before the fix took the `v1=` value, so each attack below is
shown against it (and the `v1=` value beside a `v2=` one must not reopen the replay)."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
import uuid
from collections.abc import Iterator

import pytest
import redis
from flask import Flask

from core import store
from core.settings import load_settings
from tests.harness import COCONUT_WEBHOOK_SECRET
from tests.receiver_support import everything
from webhooks.app import create_app

URL = "/webhooks/coconut"


def body_for(item: str) -> bytes:
    delivery = {"type": "appointment.updated", "data": {"type": "appointments", "id": item}}
    return json.dumps(delivery).encode()


def hex_hmac(message: bytes) -> str:
    return hmac.new(COCONUT_WEBHOOK_SECRET.encode(), message, hashlib.sha256).hexdigest()


def v2(stamp: int, delivery_id: str, body: bytes) -> str:
    """`v2=` over "{timestamp}.{delivery id}.{raw body}"."""
    return "v2=" + hex_hmac(f"{stamp}.{delivery_id}.".encode() + body)


def v1(stamp: int, body: bytes) -> str:
    """`v1=` over "{timestamp}.{raw body}": the delivery id is not in it."""
    return "v1=" + hex_hmac(f"{stamp}.".encode() + body)


def waiting(conn: redis.Redis) -> list[str]:
    """The ids of the jobs in the service's queue, read without unpacking any job."""
    return [job_id.decode() for job_id in conn.lrange("rq:queue:exsync", 0, -1)]


def sent(stamp: int, delivery_id: str, signature: str) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "X-Coconut-Timestamp": str(stamp),
        "X-Coconut-Delivery-Id": delivery_id,
        "X-Coconut-Signature": signature,
    }


@pytest.fixture
def app(redis_url: str) -> Flask:
    settings = load_settings(redis_url=redis_url, coconut_webhook_secret=COCONUT_WEBHOOK_SECRET)
    return create_app(settings)


def test_a_signature_replayed_under_another_delivery_id_is_refused(
    app: Flask, redis_conn: redis.Redis
) -> None:
    body, stamp = body_for("48213"), int(time.time())
    signature = f"{v2(stamp, 'delivery-a', body)},{v1(stamp, body)}"
    first = app.test_client().post(URL, data=body, headers=sent(stamp, "delivery-a", signature))
    assert first.status_code == 202, first.get_data(as_text=True)
    before = everything(redis_conn)

    replay = app.test_client().post(URL, data=body, headers=sent(stamp, "delivery-b", signature))

    assert replay.status_code == 401, replay.get_data(as_text=True)
    assert everything(redis_conn) == before, "the replay queued or counted something"


def test_a_v1_signature_is_refused_as_too_old(app: Flask, redis_conn: redis.Redis) -> None:
    body, stamp = body_for("48213"), int(time.time())

    answer = app.test_client().post(
        URL, data=body, headers=sent(stamp, "delivery-v1", v1(stamp, body))
    )

    assert answer.status_code == 401, answer.get_data(as_text=True)
    reason = answer.get_json()["reason"]
    assert "too old" in reason and "delivery id" in reason, reason
    assert everything(redis_conn) == {}


@pytest.mark.parametrize("round_", range(5))
def test_concurrent_copies_of_one_delivery_queue_one_job_and_get_one_202(
    app: Flask, redis_conn: redis.Redis, round_: int
) -> None:
    copies, item = 8, str(9000 + round_)
    body, stamp, delivery_id = body_for(item), int(time.time()), f"race-{uuid.uuid4()}"
    headers = sent(stamp, delivery_id, f"{v2(stamp, delivery_id, body)},{v1(stamp, body)}")
    start = threading.Barrier(copies)
    answers: list[tuple[int, str]] = []

    def deliver() -> None:
        client = app.test_client()
        start.wait()
        answer = client.post(URL, data=body, headers=headers)
        answers.append((answer.status_code, answer.get_json()["status"]))

    threads = [threading.Thread(target=deliver) for _ in range(copies)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)

    assert sorted(answers) == [(200, "duplicate")] * (copies - 1) + [(202, "accepted")], answers
    assert waiting(redis_conn) == [f"appointment-{item}"]
    assert redis_conn.get(store.dirty_key("appointment", item)) == b"1", "counted more than once"


@pytest.fixture
def rq_refused_url(redis_url: str, redis_conn: redis.Redis) -> Iterator[str]:
    """Redis as the receiver sees it when it goes down for the enqueue: its own keys answer,
    RQ's are refused (the ACL user of tests/test_receiver_redis_failure.py, deleting allowed)."""
    name, password = f"exsync-test-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    redis_conn.acl_setuser(
        name, enabled=True, passwords=[f"+{password}"], keys=["exsync:*"], commands=["+@all"]
    )
    host = redis_url.split("//", 1)[1]
    yield f"redis://{name}:{password}@{host}"
    redis_conn.acl_deluser(name)


def test_a_delivery_whose_enqueue_failed_is_accepted_when_retried(
    app: Flask, rq_refused_url: str, redis_conn: redis.Redis
) -> None:
    body, stamp = body_for("7"), int(time.time())
    headers = sent(stamp, "delivery-7", f"{v2(stamp, 'delivery-7', body)},{v1(stamp, body)}")
    settings = load_settings(
        redis_url=rq_refused_url, coconut_webhook_secret=COCONUT_WEBHOOK_SECRET
    )
    failed = create_app(settings).test_client().post(URL, data=body, headers=headers)
    assert failed.status_code == 503 and "retry" in failed.get_json()["reason"]
    assert not redis_conn.exists("rq:job:appointment-7")

    retried = app.test_client().post(URL, data=body, headers=headers)  # Redis is whole again

    assert (retried.status_code, retried.get_json()["status"]) == (202, "accepted")
    assert waiting(redis_conn) == ["appointment-7"]
    again = app.test_client().post(URL, data=body, headers=headers)
    assert (again.status_code, again.get_json()["status"]) == (200, "duplicate")
