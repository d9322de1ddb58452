"""Audit events: every applied change, revert, failure and subscription action, as a JSON
message on the topic exchange `exsync.events` (routing keys like `appointment.projected`).

Other systems (a SIEM, a data warehouse, an alerting rule) subscribe with a routing pattern.
The transport comes from a URL (kombu): by default the service's own Redis, or RabbitMQ.

Publishing must never block or fail a sync, so `publish` only puts the message on a bounded
in-process queue; a daemon thread sends it. When the broker is down the thread drops messages
after one reconnect attempt, and when the queue is full new messages are dropped: both are
counted and logged, never raised. Messages carry ids and states, never customer details,
subjects or tokens.
"""

from __future__ import annotations

import logging
import queue
import threading
from datetime import UTC, datetime
from typing import Any

from kombu import Connection, Exchange, Producer
from kombu.exceptions import OperationalError

log = logging.getLogger(__name__)

EXCHANGE = "exsync.events"
QUEUE_LIMIT = 10_000


class AuditPublisher:
    """Publishes audit events from a background thread; `close` flushes what is queued."""

    def __init__(self, url: str, deployment_id: str, exchange: str = EXCHANGE) -> None:
        self.url = url
        self.deployment_id = deployment_id
        self.exchange = Exchange(exchange, type="topic", durable=True)
        self.pending: queue.Queue[tuple[str, dict[str, Any]] | None] = queue.Queue(QUEUE_LIMIT)
        self.dropped = 0
        self.sent = 0
        self._thread = threading.Thread(target=self._run, name="audit-publisher", daemon=True)
        self._thread.start()

    def publish(self, routing_key: str, **fields: Any) -> None:
        """Queue one event; returns at once whatever the broker is doing."""
        body = {
            "event": routing_key,
            "at": datetime.now(UTC).isoformat(),
            "deployment": self.deployment_id,
            **fields,
        }
        try:
            self.pending.put_nowait((routing_key, body))
        except queue.Full:
            self._drop(routing_key, "queue full")

    def close(self, timeout: float = 5.0) -> None:
        """Send what is queued (up to `timeout`), then stop the thread."""
        try:
            self.pending.put(None, timeout=timeout)
        except queue.Full:
            return
        self._thread.join(timeout)

    def _run(self) -> None:
        conn = Connection(self.url, connect_timeout=2)
        producer: Producer | None = None
        failures = (OperationalError, OSError, *conn.connection_errors, *conn.channel_errors)
        while (item := self.pending.get()) is not None:
            routing_key, body = item
            try:
                if producer is None:
                    conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0.5)
                    producer = Producer(conn.default_channel, exchange=self.exchange)
                producer.publish(body, routing_key=routing_key, serializer="json")
                self.sent += 1
            except failures as exc:
                # Reconnect on the next message; this one is dropped rather than held, so a
                # broker outage costs audit messages, never sync throughput.
                producer = None
                conn.close()
                conn = Connection(self.url, connect_timeout=2)
                self._drop(routing_key, type(exc).__name__)
        conn.close()

    def _drop(self, routing_key: str, reason: str) -> None:
        self.dropped += 1
        log.warning("audit.dropped", extra={"routing_key": routing_key, "reason": reason})
