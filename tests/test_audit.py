"""Audit events reach a kombu consumer on the `exsync.events` topic exchange, over the service's
Redis and over a real RabbitMQ: first from the publisher alone, then from a real sync (the whole
system, both emulators). A broker that is down never blocks or fails the publisher, nor a sync."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis
from kombu import Connection, Consumer, Exchange, Message, Queue

from core import jobs
from core.audit import EXCHANGE, AuditPublisher
from core.job_kinds import JobKind
from tests.harness import COCONUT_WEBHOOK_SECRET, GRAPH_CLIENT_SECRET
from tests.sync_support import (
    CoconutAdmin,
    Outlook,
    at,
    busy_blocks,
    customer,
    scrape,
    user_id,
    wait_for_events,
)

RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672//"


@pytest.fixture(params=["redis", "rabbitmq"])
def broker_url(request: pytest.FixtureRequest, redis_url: str) -> Iterator[str]:
    url = redis_url if request.param == "redis" else RABBITMQ_URL
    with Connection(url, connect_timeout=3) as conn:
        try:
            conn.ensure_connection(max_retries=1)
        except conn.connection_errors as exc:
            pytest.fail(f"{request.param} is required at {url}: {exc}")
    yield url


def consume(url: str, pattern: str, publish: list[tuple[str, dict[str, str]]]) -> list[dict]:
    """Bind a fresh queue to `pattern`, publish through AuditPublisher, and collect bodies."""
    received: list[dict] = []
    queue = Queue(
        f"test-audit-{uuid.uuid4().hex}",
        exchange=Exchange(EXCHANGE, type="topic", durable=True),
        routing_key=pattern,
        auto_delete=True,
    )
    with Connection(url) as conn:
        queue(conn.default_channel).declare()

        def on_message(body: dict, message: Message) -> None:
            received.append(body)
            message.ack()

        publisher = AuditPublisher(url, deployment_id="test-deploy")
        for routing_key, fields in publish:
            publisher.publish(routing_key, **fields)
        publisher.close()
        with Consumer(conn, queues=[queue], callbacks=[on_message], accept=["json"]):
            expected = sum(1 for key, _ in publish if key.split(".")[0] == pattern.split(".")[0])
            while len(received) < expected:
                conn.drain_events(timeout=5)
    return received


def test_a_consumer_receives_matching_events_as_json(broker_url: str) -> None:
    received = consume(
        broker_url,
        "appointment.*",
        [
            ("appointment.projected", {"appointment_id": "42", "mailbox": "m-1"}),
            ("busy_time.removed", {"absence_id": "7"}),
            ("appointment.removed", {"appointment_id": "43", "mailbox": "m-1"}),
        ],
    )
    assert [body["event"] for body in received] == ["appointment.projected", "appointment.removed"]
    assert received[0]["appointment_id"] == "42"
    assert received[0]["deployment"] == "test-deploy"
    assert received[0]["at"].endswith("+00:00")


def test_a_broker_that_is_down_drops_events_without_raising() -> None:
    publisher = AuditPublisher("redis://127.0.0.1:1/0", deployment_id="test-deploy")
    for index in range(20):
        publisher.publish("sync.failed", job=str(index))
    publisher.close(timeout=30)
    assert publisher.sent == 0
    assert publisher.dropped == 20


class SilentLink:
    """A TCP relay to a broker that can go silent on the connections open so far, as a NAT or
    a firewall forgets idle ones: writes into them still succeed, nothing comes back."""

    def __init__(self, url: str) -> None:
        target = urlsplit(url)
        self.target = (target.hostname or "127.0.0.1", target.port or 5672)
        self.server = socket.create_server(("127.0.0.1", 0))
        port = self.server.getsockname()[1]
        self.url = url.replace(f"{target.hostname}:{target.port}", f"127.0.0.1:{port}")
        self.open: list[socket.socket] = []
        self.silent: set[socket.socket] = set()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                near, _ = self.server.accept()
            except OSError:
                return
            far = socket.create_connection(self.target)
            self.open += [near, far]
            for source, sink in ((near, far), (far, near)):
                threading.Thread(target=self._relay, args=(source, sink), daemon=True).start()

    def _relay(self, source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                if source not in self.silent:
                    sink.sendall(data)

    def go_silent(self) -> None:
        self.silent.update(self.open)

    def close(self) -> None:
        self.server.close()
        for sock in self.open:
            sock.close()


def test_an_event_sent_into_a_dead_connection_is_sent_again_on_a_fresh_one(
    broker_url: str,
    listen,  # type: ignore[no-untyped-def]
) -> None:
    events = listen(broker_url)
    link = SilentLink(broker_url)
    publisher = AuditPublisher(link.url, deployment_id="test-deploy")
    publisher.publish("subscription.renewed", subscription_id="s-1")
    events.wait_for("subscription.renewed", subscription_id="s-1", timeout=10)
    link.go_silent()

    publisher.publish("subscription.renewed", subscription_id="s-2")
    events.wait_for("subscription.renewed", subscription_id="s-2", timeout=20)
    publisher.close()
    link.close()
    assert (publisher.sent, publisher.dropped) == (2, 0)


def test_an_event_that_cannot_be_sent_is_dropped_and_the_next_still_goes(
    redis_url: str,
    listen,  # type: ignore[no-untyped-def]
) -> None:
    events = listen(redis_url)
    publisher = AuditPublisher(redis_url, deployment_id="test-deploy")
    publisher.publish("sync.failed", job_id=object())  # not JSON
    publisher.publish("sync.failed", job_id="j-2")
    events.wait_for("sync.failed", job_id="j-2", timeout=10)
    publisher.close()
    assert (publisher.sent, publisher.dropped) == (1, 1)


# ---------------------------------------------------------------- a real sync's events

QUIET = {"EXSYNC_SAFETY_NET_SECONDS": "3600", "EXSYNC_RECONCILE_SECONDS": "3600",
         "EXSYNC_SHOW_EVENT_TITLES": "true"}  # fmt: skip
USER1, STAFF1 = "user1@contoso.example", 1


class Listener:
    """A fresh queue bound to `exsync.events`, declared before anything publishes, so it holds
    every matching event from then on; `wait_for` drains it until a test's condition holds."""

    def __init__(self, url: str, pattern: str = "#") -> None:
        self.conn = Connection(url, connect_timeout=3)
        self.received: list[dict[str, Any]] = []
        self.raw: list[str] = []
        queue = Queue(
            f"test-audit-{uuid.uuid4().hex}",
            exchange=Exchange(EXCHANGE, type="topic", durable=True),
            routing_key=pattern,
            auto_delete=True,
        )
        queue(self.conn.default_channel).declare()
        self.consumer = Consumer(self.conn, queues=[queue], callbacks=[self._on], accept=["json"])
        self.consumer.consume()

    def _on(self, body: dict[str, Any], message: Message) -> None:
        self.received.append(body)
        self.raw.append(message.body if isinstance(message.body, str) else message.body.decode())
        message.ack()

    def events(self, routing_key: str, **fields: Any) -> list[dict[str, Any]]:
        return [
            body for body in self.received
            if body["event"] == routing_key and all(body.get(k) == v for k, v in fields.items())
        ]  # fmt: skip

    def wait_for(self, routing_key: str, count: int = 1, timeout: float = 60, **fields: Any
                 ) -> list[dict[str, Any]]:  # fmt: skip
        deadline = time.monotonic() + timeout
        while len(self.events(routing_key, **fields)) < count:
            if time.monotonic() > deadline:
                seen = sorted({body["event"] for body in self.received})
                raise AssertionError(f"no {count} x {routing_key} {fields}; seen: {seen}")
            with contextlib.suppress(socket.timeout, TimeoutError):
                self.conn.drain_events(timeout=0.5)
        return self.events(routing_key, **fields)

    def close(self) -> None:
        self.consumer.cancel()
        self.conn.close()


@pytest.fixture
def listen() -> Iterator[Callable[..., Listener]]:
    opened: list[Listener] = []

    def factory(url: str, pattern: str = "#") -> Listener:
        opened.append(Listener(url, pattern))
        return opened[-1]

    yield factory
    for listener in opened:
        listener.close()


def test_a_real_sync_publishes_projections_busy_time_and_subscriptions(
    broker_url: str,
    redis_url: str,
    make_system,
    listen,  # type: ignore[no-untyped-def]
) -> None:
    """Over the service's own Redis by default, and over RabbitMQ when EXSYNC_AUDIT_URL says."""
    events = listen(broker_url)
    audit = {} if broker_url == redis_url else {"EXSYNC_AUDIT_URL": broker_url}
    system = make_system(graph_args=["--users", "3"], scheduler=True,
                         settings={**QUIET, **audit})  # fmt: skip
    mailbox = user_id(system, USER1)
    (created,) = events.wait_for("subscription.created", mailbox=mailbox)
    assert created["subscription_id"] and created["expires_at"].endswith("+00:00")

    coconut = CoconutAdmin(system)
    start = (datetime.now(UTC) + timedelta(days=3)).replace(hour=15, minute=0, second=0)
    appointment = coconut.book(start.isoformat(), staff_id=STAFF1)
    (projected,) = events.wait_for(
        "appointment.projected", kind="appointment", item_id=str(appointment), mailbox=mailbox
    )
    assert projected["deployment"] == "exsync" and projected["version"] == 1
    assert projected["event_id"] in {e["id"] for e in system.graph_state()["events"][mailbox]}

    outlook = Outlook(system)
    day = datetime.now(UTC) + timedelta(days=5)
    event_id = outlook.create(USER1, subject="Credit committee", start=at(day, 9), end=at(day, 10))
    (made,) = events.wait_for("busy_time.created", mailbox=mailbox, event_id=event_id)
    assert made["staff_id"] == str(STAFF1)
    assert int(made["absence_id"]) in {b["id"] for b in busy_blocks(system, STAFF1)}
    outlook.delete(USER1, event_id)
    events.wait_for("busy_time.removed", mailbox=mailbox, event_id=event_id,
                    absence_id=made["absence_id"])  # fmt: skip

    person = customer(coconut, appointment)
    words = [person["first_name"], person["last_name"], person["email"], "Credit committee",
             "Mortgage", "@contoso", COCONUT_WEBHOOK_SECRET, GRAPH_CLIENT_SECRET]  # fmt: skip
    leaked = [w for w in words if any(w in raw for raw in events.raw)]
    assert leaked == [], f"audit events carried {leaked}"


def test_a_failing_job_publishes_sync_failed_for_each_attempt(
    redis_url: str,
    redis_conn: redis.Redis,
    make_system,
    listen,  # type: ignore[no-untyped-def]
) -> None:
    failures = listen(redis_url, "sync.*")
    make_system()
    queue = jobs.queue("exsync", redis_conn)
    job_id = jobs.ensure_queued(queue, JobKind.SYNC_APPOINTMENT, "bogus", retries=1)

    first, last = failures.wait_for("sync.failed", count=2, job_id=job_id)
    for attempt, body in ((1, first), (2, last)):
        assert body["attempt"] == attempt
        assert body["function"] == JobKind.SYNC_APPOINTMENT.path
        assert body["item_id"] == "bogus"
        assert body["error"] == "ValueError"
    assert (first["will_retry"], last["will_retry"]) == (True, False)
    assert all("invalid literal" not in raw for raw in failures.raw)  # no exception messages


def test_a_sync_completes_while_the_audit_broker_is_unreachable(make_system) -> None:  # type: ignore[no-untyped-def]
    down = {"EXSYNC_AUDIT_URL": "amqp://guest:guest@127.0.0.1:1//"}
    system = make_system(graph_args=["--users", "3"], metrics=True, settings=down)
    coconut = CoconutAdmin(system)
    start = (datetime.now(UTC) + timedelta(days=3)).replace(hour=15, minute=0, second=0)
    appointment = coconut.book(start.isoformat(), staff_id=STAFF1)
    wait_for_events(system, USER1, f"exsync:appointment:{appointment}", 1, timeout=60)

    worker = scrape(f"http://127.0.0.1:{system.metrics_ports['worker-0']}/metrics")
    assert worker["exsync_audit_events_dropped_total"][(("reason", "broker down"),)] >= 1
    assert worker["exsync_audit_events_published_total"][()] == 0
