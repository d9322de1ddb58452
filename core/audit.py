"""Audit events: every applied change, revert, failure and subscription action, as a JSON
message on the topic exchange `exsync.events` (routing keys like `appointment.projected`).

Other systems (a SIEM, a data warehouse, an alerting rule) subscribe with a routing pattern.
The transport comes from a URL (kombu, EXSYNC_AUDIT_URL): by default the service's own Redis,
or RabbitMQ. Code that did something calls `emit(routing_key, **ids)`; each process has one
publisher, made from its settings on first use.

Publishing must never block or fail a sync, so `publish` only puts the message on a bounded
in-process queue; a daemon thread sends it (RabbitMQ confirms each one). A failed send is
retried once on a fresh connection (a broker or a NAT may drop an idle one); after that the
broker counts as down for a few seconds and messages are dropped without trying, so an outage
costs audit messages, never sync throughput. Drops are counted
(`exsync_audit_events_dropped_total`) and logged once per outage, never raised. Messages carry
ids, states and counts, never customer details, subjects, email addresses or tokens.
"""

from __future__ import annotations

import atexit
import logging
import queue
import ssl
import threading
import time
from datetime import UTC, datetime
from typing import Any

from kombu import Connection, Exchange, Producer
from kombu.exceptions import OperationalError

from core.metrics import AUDIT_DROPPED, AUDIT_PUBLISHED
from core.settings import Settings, SettingsError, load_settings

log = logging.getLogger(__name__)

EXCHANGE = "exsync.events"
QUEUE_LIMIT = 10_000
SCHEMA_VERSION = 1
DOWN_SECONDS = 5.0  # after a failed send, drop without trying for this long
FLUSH_SECONDS = 2.0  # at exit, time given to send what is queued
SEND_SECONDS = 5.0
# RabbitMQ confirms each message and Redis answers each write within SEND_SECONDS, so "sent"
# means the broker has it, and a connection that died silently while idle (writes into it
# still "succeed") is noticed and replaced instead of swallowing events or hanging the thread.
TRANSPORT_OPTIONS = {"confirm_publish": True, "socket_timeout": SEND_SECONDS}


class AuditPublisher:
    """Publishes audit events from a background thread; `close` flushes what is queued."""

    def __init__(
        self, url: str, deployment_id: str, exchange: str = EXCHANGE, ca_file: str | None = None
    ) -> None:
        self.url = url
        self.tls = _tls(url, ca_file)
        self.deployment_id = deployment_id
        self.exchange = Exchange(exchange, type="topic", durable=True)
        self.pending: queue.Queue[tuple[str, dict[str, Any]] | None] = queue.Queue(QUEUE_LIMIT)
        self.dropped = 0
        self.sent = 0
        self._conn: Connection | None = None
        self._producer: Producer | None = None
        self._down_until = 0.0
        self._outage_drops = 0  # dropped since the broker was last reachable
        self._error = ""
        self._thread = threading.Thread(target=self._run, name="audit-publisher", daemon=True)
        self._thread.start()

    def publish(self, routing_key: str, **fields: Any) -> None:
        """Queue one event; returns at once whatever the broker is doing."""
        body = {
            "event": routing_key,
            "version": SCHEMA_VERSION,
            "at": datetime.now(UTC).isoformat(),
            "deployment": self.deployment_id,
            **fields,
        }
        try:
            self.pending.put_nowait((routing_key, body))
        except queue.Full:
            self._drop("queue full")

    def close(self, timeout: float = 5.0) -> None:
        """Send what is queued (up to `timeout`), then stop the thread."""
        try:
            self.pending.put(None, timeout=timeout)
        except queue.Full:
            return
        self._thread.join(timeout)

    def _run(self) -> None:
        while (item := self.pending.get()) is not None:
            if time.monotonic() < self._down_until:
                self._drop("broker down")
                continue
            try:
                sent = self._send(*item)
            except Exception:  # nothing a message does may end the thread, or every later one
                log.exception("audit.unsendable", extra={"routing_key": item[0]})
                self._reset()
                self._drop("unsendable")
                continue
            if sent:
                self._sent()
            else:
                if not self._outage_drops:  # the first failure of an outage
                    log.warning("audit.broker_unavailable", extra={"error": self._error})
                self._down_until = time.monotonic() + DOWN_SECONDS
                self._drop("broker down")
        self._reset(graceful=True)

    def _sent(self) -> None:
        self.sent += 1
        AUDIT_PUBLISHED.inc()
        if self._outage_drops:
            log.warning("audit.broker_back", extra={"dropped": self._outage_drops})
            self._outage_drops = 0

    def _send(self, routing_key: str, body: dict[str, Any]) -> bool:
        for _ in range(2):  # a broker may have closed an idle connection: one fresh try
            try:
                if self._producer is None:
                    self._conn = Connection(
                        self.url, connect_timeout=2, transport_options=TRANSPORT_OPTIONS,
                        ssl=self.tls,
                    )  # fmt: skip
                    self._conn.ensure_connection(max_retries=0)
                    self._producer = Producer(self._conn.default_channel, exchange=self.exchange)
                self._producer.publish(
                    body, routing_key=routing_key, serializer="json", delivery_mode=2,
                    timeout=SEND_SECONDS, confirm_timeout=SEND_SECONDS,
                )  # fmt: skip
                return True
            except (OperationalError, OSError, *_transport_errors(self._conn)) as exc:
                self._error = type(exc).__name__  # never str(exc): it may hold the URL
                self._reset()
        return False

    def _reset(self, *, graceful: bool = False) -> None:
        """Let go of the connection: a broken one without a word to the broker (asking a dead
        AMQP connection to close waits for an answer that never comes)."""
        conn, self._conn, self._producer = self._conn, None, None
        if conn is None:
            return
        try:
            if graceful:
                conn.close()
            else:
                conn.collect()
        except Exception:  # a dead connection may fail to close; it is gone either way
            log.debug("audit.close_failed", exc_info=True)

    def _drop(self, reason: str) -> None:
        self.dropped += 1
        self._outage_drops += 1
        AUDIT_DROPPED.labels(reason=reason).inc()


def _tls(url: str, ca_file: str | None) -> dict[str, Any] | bool:
    """kombu's TLS options for a rediss:// broker: its certificate checked, against `ca_file`
    when given (EXSYNC_REDIS_CA_FILE). kombu alone checks none: it warns and goes on. Other
    brokers keep kombu's default; ssl_* options in the URL's query win over these."""
    if not url.startswith("rediss://"):
        return False
    return {"ssl_cert_reqs": ssl.CERT_REQUIRED, **({"ssl_ca_certs": ca_file} if ca_file else {})}


def _transport_errors(conn: Connection | None) -> tuple[type[BaseException], ...]:
    if conn is None:
        return ()
    return (*conn.connection_errors, *conn.channel_errors)


# ---------------------------------------------------------------- one publisher per process

_lock = threading.Lock()
_publisher: AuditPublisher | None = None
_configured = False


def configure(settings: Settings) -> None:
    """Publish this process's events as these settings say (the worker's context does this)."""
    global _publisher, _configured
    with _lock:
        old, _publisher, _configured = _publisher, _make(settings), True
    if old is not None:
        old.close(FLUSH_SECONDS)


def emit(routing_key: str, **fields: Any) -> None:
    """Publish one audit event (ids, states, counts only); never blocks, never raises."""
    publisher = _current()
    if publisher is not None:
        publisher.publish(routing_key, **fields)


def _current() -> AuditPublisher | None:
    global _publisher, _configured
    if not _configured:
        with _lock:
            if not _configured:
                try:
                    _publisher = _make(load_settings())
                except SettingsError as exc:  # a process that got this far has its settings
                    log.warning("audit.off", extra={"reason": str(exc)})
                _configured = True
    return _publisher


def _make(settings: Settings) -> AuditPublisher | None:
    url = settings.audit_broker
    if url is None:
        return None
    publisher = AuditPublisher(url, settings.deployment_id, ca_file=settings.redis_ca_file)
    atexit.register(publisher.close, FLUSH_SECONDS)
    return publisher
