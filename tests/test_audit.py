"""Audit events reach a kombu consumer on the `exsync.events` topic exchange, over the service's
Redis and over a real RabbitMQ; a broker that is down never blocks or fails the publisher."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from kombu import Connection, Consumer, Exchange, Message, Queue

from core.audit import EXCHANGE, AuditPublisher

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
