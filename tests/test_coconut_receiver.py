"""The Coconut receiver (`/webhooks/coconut`) through Flask's test client over the real Redis,
fed the deliveries of the project's Coconut webhook contract (tests/fixtures/coconut, sources in
tests/fixtures/README.md), signed as Coconut signs them: what each event queues, redeliveries,
and every guard's 4xx, which names its reason and writes nothing."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml
from flask.testing import FlaskClient
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from core import store
from core.job_kinds import JobKind
from core.settings import load_settings
from tests.receiver_support import everything, queued, refused
from webhooks.app import create_app
from webhooks.coconut_signature import sign

FIXTURES = Path(__file__).parent / "fixtures" / "coconut"
SPEC = Path(__file__).parent.parent / "core" / "coconut" / "openapi.yaml"
URL = "/webhooks/coconut"
SECRET = "whsec-receiver-test-7f3a9c1e5b2d-0123456789"
OTHER_SECRET = "whsec-someone-else-0123456789abcdef"
MISMATCH = "signature does not match the timestamp, delivery id and body"
MAX_BODY = 65_536
APPOINTMENT = JobKind.SYNC_APPOINTMENT.path
ABSENCE = JobKind.SYNC_ABSENCE.path
STAFF = JobKind.SYNC_STAFF.path

# Each delivery, and the one job it must queue: (function, job id, item, announced version).
EXPECTED = {
    "appointment_created.json": (APPOINTMENT, "appointment-48213", "48213", 1),
    "appointment_updated.json": (APPOINTMENT, "appointment-48213", "48213", 2),
    "appointment_rescheduled.json": (APPOINTMENT, "appointment-48213", "48213", 3),
    "appointment_reassigned.json": (APPOINTMENT, "appointment-48213", "48213", 4),
    "appointment_cancelled.json": (APPOINTMENT, "appointment-48213", "48213", 5),
    "absence_created.json": (ABSENCE, "absence-9031", "9031", 1),
    "absence_updated.json": (ABSENCE, "absence-9031", "9031", 2),
    "absence_deleted.json": (ABSENCE, "absence-9031", "9031", 3),
    "user_updated.json": (STAFF, "staff-17", "17", None),
}


def raw(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def payload(name: str) -> dict[str, Any]:
    return json.loads(raw(name))


@pytest.fixture
def client(redis_url: str) -> FlaskClient:
    settings = load_settings(
        redis_url=redis_url, coconut_webhook_secret=SECRET, max_body_bytes=MAX_BODY
    )
    return create_app(settings).test_client()


def headers(
    body: bytes, *, at: int | None = None, secret: str = SECRET, **extra: str | None
) -> dict[str, str]:
    """What Coconut sends with this body (research §7.6); `extra` overrides, None removes."""
    timestamp = int(time.time()) if at is None else at
    try:
        delivery = json.loads(body)
    except ValueError:
        delivery = None
    if not isinstance(delivery, dict):
        delivery = {}
    sent: dict[str, str | None] = {
        "Content-Type": "application/json",
        "User-Agent": "Coconut-Webhooks/2",
        "X-Coconut-Webhook-Id": "3",
        "X-Coconut-Delivery-Id": str(delivery.get("id", "0e0e0e0e-0000-4000-8000-000000000000")),
        "X-Coconut-Event": str(delivery.get("type", "")),
        "X-Coconut-Timestamp": str(timestamp),
        **extra,
    }
    if "X-Coconut-Signature" not in extra:  # over the delivery id as sent
        delivery_id = sent["X-Coconut-Delivery-Id"] or ""
        sent["X-Coconut-Signature"] = sign(secret, timestamp, delivery_id, body)
    return {name: value for name, value in sent.items() if value is not None}


def deliver(client: FlaskClient, body: bytes, **options: Any) -> Any:
    return client.post(URL, data=body, headers=headers(body, **options))


# ---------------------------------------------------------------- the fixtures themselves


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_the_fixtures_follow_the_written_contract(name: str) -> None:
    spec = yaml.safe_load(SPEC.read_text())
    registry = Registry().with_resource("spec", Resource(spec, DRAFT202012))
    schema = {"$ref": "spec#/components/schemas/DeliveryPayload"}
    Draft202012Validator(schema, registry=registry).validate(payload(name))


# ---------------------------------------------------------------- accepted deliveries


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_a_delivery_queues_the_one_job_of_its_item(
    client: FlaskClient, redis_conn: redis.Redis, name: str
) -> None:
    func, job_id, item, version = EXPECTED[name]
    delivery = payload(name)

    answer = deliver(client, raw(name))

    assert answer.status_code == 202, answer.get_data(as_text=True)
    assert answer.get_json() == {"status": "accepted", "job_id": job_id}
    assert queued(redis_conn) == {job_id: (func, (item,))}
    kind = job_id.split("-")[0]
    assert int(redis_conn.get(store.dirty_key(kind, item)) or 0) == 1
    # Kept for the day Coconut redelivers in, not only for the moment of the claim.
    assert redis_conn.ttl(store.delivery_key("coconut", delivery["id"])) > 86_000
    announced = redis_conn.zscore(store.announced_key(kind), item)
    assert announced == (None if version is None else float(version))


def test_a_redelivery_is_a_duplicate_and_queues_nothing_more(
    client: FlaskClient, redis_conn: redis.Redis
) -> None:
    body = raw("appointment_rescheduled.json")
    assert deliver(client, body).status_code == 202
    before = everything(redis_conn)

    # Coconut retries with the same delivery id, a new timestamp and a new signature.
    again = deliver(client, body, at=int(time.time()) - 30)

    assert again.status_code == 200
    assert again.get_json() == {"status": "duplicate", "delivery_id": payload(
        "appointment_rescheduled.json")["id"]}  # fmt: skip
    assert everything(redis_conn) == before


def test_deliveries_for_one_item_share_its_job_and_keep_the_newest_version(
    client: FlaskClient, redis_conn: redis.Redis
) -> None:
    for name in ("appointment_rescheduled.json", "appointment_updated.json"):  # out of order
        assert deliver(client, raw(name)).status_code == 202

    assert queued(redis_conn) == {"appointment-48213": (APPOINTMENT, ("48213",))}
    assert int(redis_conn.get(store.dirty_key("appointment", "48213")) or 0) == 2
    assert redis_conn.zscore(store.announced_key("appointment"), "48213") == 3.0


def test_a_ping_is_answered_and_queues_nothing(client: FlaskClient, unchanged: None) -> None:
    answer = deliver(client, raw("ping.json"))
    assert answer.status_code == 200
    assert answer.get_json() == {"status": "ignored", "event": "ping"}


def test_a_signature_from_the_secret_being_rotated_in_is_accepted(
    client: FlaskClient, redis_conn: redis.Redis
) -> None:
    body, now = raw("absence_created.json"), int(time.time())
    delivery_id = payload("absence_created.json")["id"]
    rotated_in = "whsec-the-new-one-0123456789abcdef"
    both = f"{sign(rotated_in, now, delivery_id, body)},{sign(SECRET, now, delivery_id, body)}"

    answer = deliver(client, body, at=now, **{"X-Coconut-Signature": both})

    assert answer.status_code == 202
    assert list(queued(redis_conn)) == ["absence-9031"]


def test_a_timestamp_within_five_minutes_is_accepted(
    client: FlaskClient, redis_conn: redis.Redis
) -> None:
    for offset, name in ((-290, "appointment_created.json"), (290, "absence_created.json")):
        assert deliver(client, raw(name), at=int(time.time()) + offset).status_code == 202
    assert sorted(queued(redis_conn)) == ["absence-9031", "appointment-48213"]


# ---------------------------------------------------------------- the guards


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        ({"secret": OTHER_SECRET}, MISMATCH),
        ({"X-Coconut-Signature": None}, "missing X-Coconut-Signature header"),
        ({"X-Coconut-Signature": ""}, "missing X-Coconut-Signature header"),
        ({"X-Coconut-Signature": "v2=" + "0" * 64}, MISMATCH),
        ({"X-Coconut-Signature": "v2=ÿ"}, MISMATCH),
        ({"X-Coconut-Signature": "v1=" + "0" * 64}, "signature scheme v1 is too old"),
        ({"X-Coconut-Timestamp": None}, "missing X-Coconut-Timestamp header"),
        ({"X-Coconut-Timestamp": "+1733061802"}, "is not unix seconds"),
        ({"X-Coconut-Timestamp": "2026-12-01T14:03:22Z"}, "is not unix seconds"),
        ({"X-Coconut-Delivery-Id": None}, "missing X-Coconut-Delivery-Id header"),
        ({"X-Coconut-Delivery-Id": ""}, "missing X-Coconut-Delivery-Id header"),
        ({"X-Coconut-Delivery-Id": "d" * 101}, "X-Coconut-Delivery-Id is not a delivery id"),
        ({"X-Coconut-Delivery-Id": "d.1"}, "X-Coconut-Delivery-Id is not a delivery id"),
    ],
    ids=["other secret", "no signature", "empty signature", "zero signature",
         "non-ascii signature", "v1 signature", "no timestamp", "signed timestamp",
         "iso timestamp", "no delivery id", "empty delivery id", "long delivery id",
         "dotted delivery id"],
)  # fmt: skip
def test_a_delivery_not_signed_by_coconut_is_a_401(
    client: FlaskClient, unchanged: None, options: dict[str, Any], reason: str
) -> None:
    refused(deliver(client, raw("appointment_created.json"), **options), 401, reason)


# Whole seconds apart from the 300-second edge (the signature vectors test the edge itself with a
# fixed clock): the request is signed a moment before it is checked.
@pytest.mark.parametrize("offset", [-301, -3600, 330, 86_400], ids=["stale", "old", "ahead", "day"])
def test_a_timestamp_outside_five_minutes_is_a_replay(
    client: FlaskClient, unchanged: None, offset: int
) -> None:
    answer = deliver(client, raw("appointment_created.json"), at=int(time.time()) + offset)
    refused(answer, 401, "outside the 5-minute tolerance")


def test_a_body_changed_after_signing_is_a_401(client: FlaskClient, unchanged: None) -> None:
    body = raw("appointment_cancelled.json")
    tampered = body.replace(b'"48213"', b'"48214"')
    assert tampered != body
    answer = client.post(URL, data=tampered, headers=headers(body))
    refused(answer, 401, MISMATCH)


def test_a_signature_over_another_timestamp_is_a_401(client: FlaskClient, unchanged: None) -> None:
    body, now = raw("appointment_created.json"), int(time.time())
    delivery_id = payload("appointment_created.json")["id"]
    signature = sign(SECRET, now - 1, delivery_id, body)
    answer = deliver(client, body, at=now, **{"X-Coconut-Signature": signature})
    refused(answer, 401, MISMATCH)


def test_a_signature_over_another_delivery_id_is_a_401(
    client: FlaskClient, unchanged: None
) -> None:
    body, now = raw("appointment_created.json"), int(time.time())
    signature = sign(SECRET, now, payload("appointment_created.json")["id"], body)
    replayed = {"X-Coconut-Signature": signature, "X-Coconut-Delivery-Id": "a-fresh-delivery-id"}
    answer = deliver(client, body, at=now, **replayed)
    refused(answer, 401, MISMATCH)


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "application/xml", ""]
)
def test_a_signed_body_not_declared_json_is_a_415(
    client: FlaskClient, unchanged: None, content_type: str
) -> None:
    answer = deliver(client, raw("appointment_created.json"), **{"Content-Type": content_type})
    refused(answer, 415, "Content-Type must be application/json")


def test_the_signature_is_checked_before_the_content_type(
    client: FlaskClient, unchanged: None
) -> None:
    answer = deliver(client, raw("appointment_created.json"), secret=OTHER_SECRET,
                     **{"Content-Type": "text/plain"})  # fmt: skip
    refused(answer, 401, MISMATCH)


def variant(name: str, change: Any) -> bytes:
    delivery = payload(name)
    change(delivery)
    return json.dumps(delivery).encode()


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b'{"id": "d-1", "type": "appointment.created", "data": {', "body is not JSON"),
        (b"\xff\xfe\x00", "body is not JSON"),
        (b"", "body is not JSON"),
        (b'["appointment.created"]', "body must be a JSON object"),
        (variant("appointment_created.json", lambda d: d.update(type="appointment.deleted")),
         "unknown event type"),
        (variant("appointment_created.json", lambda d: d.pop("type")), "unknown event type"),
        (variant("appointment_created.json", lambda d: d.update(data=None)),
         "data must be an object"),
        (variant("appointment_created.json", lambda d: d["data"].update(type="absences")),
         "must carry data.type 'appointments'"),
        (variant("user_updated.json", lambda d: d["data"].update(type="staff")),
         "must carry data.type 'users'"),
        (variant("absence_deleted.json", lambda d: d["data"].update(id="9031; DROP")),
         "data.id must be a numeric id"),
        (variant("absence_deleted.json", lambda d: d["data"].update(id="٩٠٣١")),
         "data.id must be a numeric id"),
        (variant("absence_deleted.json", lambda d: d["data"].update(id=True)),
         "data.id must be a numeric id"),
        (variant("absence_deleted.json", lambda d: d["data"].pop("id")),
         "data.id must be a numeric id"),
    ],
    ids=["truncated", "not utf-8", "empty", "array", "unknown event", "no event",
         "no data", "wrong data type", "wrong user type", "id not numeric",
         "arabic-indic digits", "boolean id", "no id"],
)  # fmt: skip
def test_a_signed_body_that_is_no_delivery_of_ours_is_a_400(
    client: FlaskClient, unchanged: None, body: bytes, reason: str
) -> None:
    refused(deliver(client, body), 400, reason)


def test_an_oversized_body_is_a_413(client: FlaskClient, unchanged: None) -> None:
    delivery = payload("appointment_updated.json")
    delivery["meta"]["changed"] = ["notes"] * (MAX_BODY // 8)
    body = json.dumps(delivery).encode()
    assert len(body) > MAX_BODY
    refused(deliver(client, body), 413, "exceeds the capacity limit")


def test_a_refused_delivery_is_not_taken_for_a_duplicate_when_sent_right(
    client: FlaskClient, redis_conn: redis.Redis
) -> None:
    body = raw("appointment_created.json")
    assert deliver(client, body, secret=OTHER_SECRET).status_code == 401
    assert deliver(client, body, **{"Content-Type": "text/plain"}).status_code == 415

    assert deliver(client, body).status_code == 202
    assert list(queued(redis_conn)) == ["appointment-48213"]
