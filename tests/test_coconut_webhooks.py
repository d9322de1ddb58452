"""Coconut emulator webhooks, received by a real HTTP endpoint and checked with our verifier.

The emulator runs as its own process with `--webhook-url` pointing at a small Flask receiver
in this process; admin actions go through its API as a Coconut admin's clicks would.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from flask import Flask, request
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012
from werkzeug.serving import make_server

from core import jobs, store
from core.settings import load_settings
from tests.emulator_launch import coconut_argv, launch
from tests.harness import (
    COCONUT_CLIENT_ID,
    COCONUT_CLIENT_SECRET,
    COCONUT_WEBHOOK_SECRET,
    free_port,
    wait_until,
)
from webhooks.app import create_app as create_service_app
from webhooks.coconut_signature import SignatureError, sign, verify

SPEC_PATH = Path(__file__).parent.parent / "core" / "coconut" / "openapi.yaml"
API = "/api/v2/b2b"


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    at: float

    @property
    def event(self) -> str:
        return self.headers["X-Coconut-Event"]

    @property
    def delivery_id(self) -> str:
        return self.headers["X-Coconut-Delivery-Id"]

    @property
    def payload(self) -> dict[str, Any]:
        return json.loads(self.body)


@dataclass
class Receiver:
    """Records every POST; answers from `plan` first (one status per request), then 204."""

    url: str = ""
    got: list[Received] = field(default_factory=list)
    plan: list[int] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self) -> int:
        with self.lock:
            self.got.append(Received(dict(request.headers), request.get_data(), time.monotonic()))
            return self.plan.pop(0) if self.plan else 204

    def events(self, event: str | None = None) -> list[Received]:
        with self.lock:
            return [r for r in self.got if event is None or r.event == event]

    def wait_for(self, event: str, count: int = 1, timeout: float = 10) -> list[Received]:
        return wait_until(
            lambda: self.events(event) if len(self.events(event)) >= count else None,
            timeout,
            what=f"{count} x {event}",
        )


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    app = Flask("receiver")
    hooks = Receiver()

    @app.post("/hook")
    def hook() -> tuple[str, int]:
        return "", hooks.answer()

    server = make_server("127.0.0.1", 0, app, threaded=True)
    hooks.url = f"http://127.0.0.1:{server.server_port}/hook"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield hooks
    server.shutdown()
    thread.join(5)


@dataclass
class Coconut:
    """The running emulator: `api` is an admin's authenticated client, `control` is not."""

    api: httpx.Client
    control: httpx.Client

    def state(self) -> dict[str, Any]:
        return self.control.get("/_emulator/state").raise_for_status().json()

    def fault(self, kind: str, **spec: Any) -> None:
        self.control.post(f"/_emulator/faults/{kind}", json=spec).raise_for_status()

    def write(self, method: str, path: str, kind: str, attrs: dict[str, Any]) -> dict[str, Any]:
        body = {"data": {"type": kind, "attributes": attrs}}
        response = self.api.request(method, f"{API}{path}", json=body)
        assert response.is_success, response.text
        return response.json()["data"]

    def deliveries(self) -> list[dict[str, Any]]:
        return [d for hook in self.state()["webhooks"] for d in hook["deliveries"]]


@contextmanager
def start_emulator(tmp_path: Path, receiver: Receiver, *extra: str) -> Iterator[Coconut]:
    port = free_port()
    argv = coconut_argv(port, "--staff", "3", "--webhook-url", receiver.url, "--webhook-secret",
                        COCONUT_WEBHOOK_SECRET, "--retry-scale", "0.01", *extra)  # fmt: skip
    process, _ = launch(argv, {**os.environ, "PYTHONUNBUFFERED": "1"}, tmp_path / "coconut.log")
    try:
        base = f"http://127.0.0.1:{port}"
        token = httpx.post(
            f"{base}{API}/oauth/token",
            data={"grant_type": "client_credentials", "client_id": COCONUT_CLIENT_ID,
                  "client_secret": COCONUT_CLIENT_SECRET},
        ).raise_for_status().json()["access_token"]  # fmt: skip
        with (
            httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}) as api,
            httpx.Client(base_url=base) as control,
        ):
            yield Coconut(api, control)
    finally:
        process.stop()


@pytest.fixture
def coconut(tmp_path: Path, receiver: Receiver) -> Iterator[Coconut]:
    with start_emulator(tmp_path, receiver) as running:
        yield running


@pytest.fixture(scope="module")
def payload_schema() -> Draft202012Validator:
    spec = yaml.safe_load(SPEC_PATH.read_text())
    registry = Registry().with_resource("spec", Resource(spec, DRAFT202012))
    return Draft202012Validator(
        {"$ref": "spec#/components/schemas/DeliveryPayload"}, registry=registry
    )


def verified(received: Received) -> None:
    verify(
        COCONUT_WEBHOOK_SECRET,
        received.headers.get("X-Coconut-Timestamp"),
        received.headers.get("X-Coconut-Delivery-Id"),
        received.headers.get("X-Coconut-Signature"),
        received.body,
    )


def disabled(coconut: Coconut) -> dict[str, Any] | None:
    return next((h for h in coconut.state()["webhooks"] if not h["active"]), None)


def reschedule(coconut: Coconut, appointment_id: int, start: str) -> None:
    coconut.write("PATCH", f"/appointments/{appointment_id}", "appointments", {"start": start})


def test_delivery_is_signed_and_a_tampered_body_or_delivery_id_fails_verification(
    coconut: Coconut, receiver: Receiver, payload_schema: Draft202012Validator
) -> None:
    coconut.write("PATCH", "/appointments/1", "appointments", {"notes": "bring ID"})
    (delivery,) = receiver.wait_for("appointment.updated")
    verified(delivery)
    payload = delivery.payload
    payload_schema.validate(payload)
    assert payload["id"] == delivery.delivery_id
    assert payload["data"] == {
        "type": "appointments", "id": "1", "attributes": payload["data"]["attributes"]
    }  # fmt: skip
    assert payload["meta"]["changed"] == ["notes"]
    assert payload["data"]["attributes"]["version"] == 2
    assert delivery.headers["X-Coconut-Webhook-Id"] == "1"
    assert delivery.headers["User-Agent"].startswith("Coconut-Webhooks/")
    stamp = delivery.headers["X-Coconut-Timestamp"]
    signature = delivery.headers["X-Coconut-Signature"]
    assert signature.startswith("v2=")
    tampered = delivery.body.replace(b'"version":2', b'"version":3')
    assert tampered != delivery.body
    other_secret = "another-secret-0123456789abcdef-0123"
    with pytest.raises(SignatureError, match="does not match"):
        verify(COCONUT_WEBHOOK_SECRET, stamp, delivery.delivery_id, signature, tampered)
    with pytest.raises(SignatureError, match="does not match"):
        verify(COCONUT_WEBHOOK_SECRET, stamp, "another-delivery-id", signature, delivery.body)
    with pytest.raises(SignatureError, match="does not match"):
        verify(other_secret, stamp, delivery.delivery_id, signature, delivery.body)


def test_admin_actions_emit_their_appointment_events(
    coconut: Coconut, receiver: Receiver, payload_schema: Draft202012Validator
) -> None:
    created = coconut.write(
        "POST", "/appointments", "appointments",
        {"start": "2030-05-06 10:00:00", "staff_id": 1, "location_id": 1, "service_id": [1]},
    )  # fmt: skip
    new_id = int(created["id"])
    (made,) = receiver.wait_for("appointment.created")
    assert made.payload["data"]["id"] == str(new_id)
    reschedule(coconut, new_id, "2030-05-06 11:00:00")
    (moved,) = receiver.wait_for("appointment.rescheduled")
    assert moved.payload["meta"]["changed"] == ["end", "start"]
    assert moved.payload["data"]["attributes"]["start"] == "2030-05-06T11:00:00-04:00"
    coconut.write("PATCH", f"/appointments/{new_id}", "appointments", {"staff_id": 3})
    (handed,) = receiver.wait_for("appointment.reassigned")
    assert handed.payload["meta"]["previous_staff_ids"] == [1]
    assert handed.payload["data"]["attributes"]["staff_id"] == 3
    coconut.write("PATCH", f"/appointments/{new_id}", "appointments", {"status": "cancelled"})
    (gone,) = receiver.wait_for("appointment.cancelled")
    assert gone.payload["data"]["attributes"]["status"] == "cancelled"
    receiver.wait_for("appointment.updated", count=3)  # the catch-all rides along each change
    for delivery in receiver.events():
        verified(delivery)
        payload_schema.validate(delivery.payload)


def test_user_and_coconut_absence_changes_emit_events(coconut: Coconut, receiver: Receiver) -> None:
    coconut.write("PATCH", "/users/2", "users", {"email": "bilal@contoso.example"})
    (user,) = receiver.wait_for("user.updated")
    assert user.payload["data"]["attributes"]["email"] == "bilal@contoso.example"
    assert user.payload["meta"]["changed"] == ["email"]
    block = coconut.write(
        "POST", "/absences", "absences",
        {"user_id": 1, "start": "2030-05-06 12:00:00", "end": "2030-05-06 13:00:00",
         "source": "coconut", "title": "Lunch and learn"},
    )  # fmt: skip
    receiver.wait_for("absence.created")
    coconut.write("PATCH", f"/absences/{block['id']}", "absences", {"title": "Training"})
    receiver.wait_for("absence.updated")
    assert coconut.api.delete(f"{API}/absences/{block['id']}").status_code == 204
    (deleted,) = receiver.wait_for("absence.deleted")
    assert deleted.payload["data"]["id"] == block["id"]
    assert deleted.payload["data"]["attributes"]["version"] == 3


def test_external_absences_never_emit_events(coconut: Coconut, receiver: Receiver) -> None:
    external = coconut.write(
        "POST", "/absences", "absences",
        {"user_id": 1, "start": "2030-05-06T16:00:00Z", "end": "2030-05-06T17:00:00Z",
         "external_id": "AAMkAD-event-1", "external_version": "ck1"},
    )  # fmt: skip
    assert external["attributes"]["source"] == "external"
    coconut.write("PATCH", f"/absences/{external['id']}", "absences", {"external_version": "ck2"})
    assert coconut.api.delete(f"{API}/absences/{external['id']}").status_code == 204
    # A Coconut-made block afterwards: its delivery shows the sender has caught up.
    marker = coconut.write(
        "POST", "/absences", "absences",
        {"user_id": 2, "start": "2030-05-07 12:00:00", "end": "2030-05-07 13:00:00",
         "source": "coconut"},
    )  # fmt: skip
    (seen,) = receiver.wait_for("absence.created")
    assert seen.payload["data"]["id"] == marker["id"]
    assert [d["event"] for d in coconut.deliveries()] == ["absence.created"]
    assert all(r.payload["data"]["id"] != external["id"] for r in receiver.events())


def test_redelivery_after_a_500_keeps_the_delivery_id(coconut: Coconut, receiver: Receiver) -> None:
    receiver.plan = [500, 503]
    coconut.write("PATCH", "/appointments/1", "appointments", {"notes": "retry me"})
    attempts = receiver.wait_for("appointment.updated", count=3)
    assert len({a.delivery_id for a in attempts}) == 1
    assert len({a.body for a in attempts}) == 1
    for attempt in attempts:
        verified(attempt)
    assert attempts[1].at - attempts[0].at >= 0.2  # 30 s x 0.01 retry scale, minus jitter
    (delivery,) = coconut.deliveries()
    assert delivery["status"] == "delivered"
    assert [a["status_code"] for a in delivery["attempts"]] == [500, 503, 204]
    (hook,) = coconut.state()["webhooks"]
    assert hook["failure_count"] == 0 and hook["active"] is True


def test_a_410_disables_the_subscription(coconut: Coconut, receiver: Receiver) -> None:
    receiver.plan = [410]
    coconut.write("PATCH", "/appointments/1", "appointments", {"notes": "first"})
    receiver.wait_for("appointment.updated")
    hook = wait_until(lambda: disabled(coconut), 5, what="the subscription to be disabled")
    assert hook["disabled_reason"] == "gone"
    coconut.write("PATCH", "/appointments/1", "appointments", {"notes": "second"})
    time.sleep(0.5)
    assert len(receiver.events()) == 1


def test_repeated_failures_disable_the_subscription(tmp_path: Path, receiver: Receiver) -> None:
    receiver.plan = [500] * 20
    with start_emulator(tmp_path, receiver, "--disable-after", "3") as coconut:
        coconut.write("PATCH", "/appointments/1", "appointments", {"notes": "never lands"})
        receiver.wait_for("appointment.updated", count=3)
        hook = wait_until(lambda: disabled(coconut), 5, what="the subscription to be disabled")
        assert hook["disabled_reason"] == "too_many_failures"
        (delivery,) = coconut.deliveries()
        assert delivery["status"] == "abandoned"
        time.sleep(0.5)
        assert len(receiver.events()) == 3


def test_ping_reaches_the_endpoint(coconut: Coconut, receiver: Receiver) -> None:
    response = coconut.api.post(f"{API}/webhooks/1/test")
    assert response.status_code == 202
    (ping,) = receiver.wait_for("ping")
    verified(ping)
    assert ping.delivery_id == response.json()["data"]["id"]


def test_duplicate_fault_sends_the_same_delivery_twice(
    coconut: Coconut, receiver: Receiver
) -> None:
    coconut.fault("delivery_duplicate", count=1)
    coconut.write("PATCH", "/appointments/1", "appointments", {"notes": "twice"})
    first, second = receiver.wait_for("appointment.updated", count=2)
    assert first.delivery_id == second.delivery_id and first.body == second.body
    (delivery,) = coconut.deliveries()
    assert delivery["faults"] == ["duplicate"]


def test_drop_fault_never_sends(coconut: Coconut, receiver: Receiver) -> None:
    coconut.fault("delivery_drop", count=1)
    coconut.write("PATCH", "/appointments/1", "appointments", {"notes": "lost"})
    coconut.write("PATCH", "/appointments/2", "appointments", {"notes": "kept"})
    (kept,) = receiver.wait_for("appointment.updated")
    assert kept.payload["data"]["id"] == "2"
    time.sleep(0.3)
    assert len(receiver.events()) == 1
    dropped = [d for d in coconut.deliveries() if d["status"] == "dropped"]
    assert len(dropped) == 1 and dropped[0]["attempts"] == []


def test_delay_fault_holds_the_first_attempt(coconut: Coconut, receiver: Receiver) -> None:
    coconut.fault("delivery_delay", count=1, seconds=1.5)
    started = time.monotonic()
    coconut.write("PATCH", "/appointments/1", "appointments", {"notes": "late"})
    (late,) = receiver.wait_for("appointment.updated")
    assert late.at - started >= 1.4


def test_reorder_fault_delivers_newest_first(coconut: Coconut, receiver: Receiver) -> None:
    coconut.fault("delivery_reorder", count=2, batch=2, hold_seconds=5)
    coconut.write("PATCH", "/appointments/1", "appointments", {"notes": "older"})
    coconut.write("PATCH", "/appointments/2", "appointments", {"notes": "newer"})
    got = receiver.wait_for("appointment.updated", count=2)
    assert [r.payload["data"]["id"] for r in got] == ["2", "1"]


def test_bad_fault_specs_are_refused(coconut: Coconut) -> None:
    unknown = coconut.control.post("/_emulator/faults/meteor", json={"count": 1})
    assert unknown.status_code == 400 and "unknown fault kind" in unknown.text
    both = coconut.control.post("/_emulator/faults/delivery_drop", json={"count": 1, "share": 1})
    assert both.status_code == 400 and "exactly one" in both.text
    typo = coconut.control.post("/_emulator/faults/api_error", json={"count": 1, "staus": 503})
    assert typo.status_code == 400 and "staus" in typo.text


@pytest.fixture
def service_receiver(redis_url: str) -> Iterator[str]:
    """The service's own webhook app (webhooks.app) on real Redis, serving /webhooks/coconut."""
    settings = load_settings(
        redis_url=redis_url, coconut_webhook_secret=COCONUT_WEBHOOK_SECRET, queue_name="coconut"
    )
    server = make_server("127.0.0.1", 0, create_service_app(settings), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/webhooks/coconut"
    server.shutdown()
    thread.join(5)


def test_the_services_receiver_accepts_the_emulators_deliveries_once(
    tmp_path: Path, service_receiver: str, redis_conn: Any
) -> None:
    """Signed deliveries get 202 and a queued job; a duplicated delivery gets 200 "duplicate".

    The receiver claims the delivery id in one step before queueing, so of two copies arriving
    at the same moment exactly one is accepted (tests/security/test_coconut_replay.py races
    them)."""
    hooks = Receiver(url=service_receiver)
    with start_emulator(tmp_path, hooks) as coconut:
        coconut.fault("delivery_duplicate", count=1)
        coconut.write("PATCH", "/appointments/1", "appointments", {"notes": "for the service"})

        def answered() -> list[int] | None:
            (delivery,) = coconut.deliveries()
            codes = sorted(a["status_code"] for a in delivery["attempts"])
            return codes if len(codes) == 2 else None

        assert wait_until(answered, 10, what="both copies answered") == [200, 202]
    queued = jobs.queue("coconut", redis_conn)
    assert len(queued) == 1


def test_the_receiver_keeps_the_newest_version_its_deliveries_announce(
    service_receiver: str, redis_conn: Any
) -> None:
    """What lets a round that already read version 7 skip the round a late copy of version 5,
    or the second webhook of a reschedule, would cost (core.jobs). A delivery that names no
    version, or an odd one, counts as newer than any read, and is still accepted."""
    announced = store.announced_key("appointment")

    def deliver(n: int, attributes: dict[str, Any]) -> float | None:
        data = {"type": "appointments", "id": "41", "attributes": attributes}
        payload = {"type": "appointment.updated", "data": data}
        body = json.dumps(payload).encode()
        stamp = int(time.time())
        answer = httpx.post(service_receiver, content=body, headers={
            "Content-Type": "application/json", "X-Coconut-Timestamp": str(stamp),
            "X-Coconut-Signature": sign(COCONUT_WEBHOOK_SECRET, stamp, f"version-{n}", body),
            "X-Coconut-Delivery-Id": f"version-{n}",
        })  # fmt: skip
        assert answer.status_code == 202, answer.text
        return redis_conn.zscore(announced, "41")

    assert deliver(1, {"version": 7}) == 7
    assert deliver(2, {"version": 5}) == 7  # a late copy of an older state
    assert deliver(3, {"version": 9}) == 9
    redis_conn.zrem(announced, "41")
    assert deliver(4, {"version": "9"}) == float("inf")
    redis_conn.zrem(announced, "41")
    assert deliver(5, {}) == float("inf")
