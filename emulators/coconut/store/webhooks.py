"""Webhook subscriptions and the delivery queue the sender threads drain (deliveries.py).

A change calls `emit`, which queues one delivery per active subscription to the event, with the
thin payload fixed now; nothing here sends HTTP. The delivery faults (drop, delay, duplicate,
reorder) are applied as a delivery is queued.
"""

from __future__ import annotations

import heapq
import json
import secrets
import time
import uuid
from typing import Any
from urllib.parse import urlsplit

from emulators.coconut import render
from emulators.coconut.jsonapi import fmt_utc, invalid, utcnow
from emulators.coconut.store.checks import check_keys, want_bool, want_str
from emulators.coconut.store.records import Record, Records

EVENTS = (
    "appointment.created",
    "appointment.updated",
    "appointment.rescheduled",
    "appointment.cancelled",
    "appointment.reassigned",
    "user.updated",
    "absence.created",
    "absence.updated",
    "absence.deleted",
)
WEBHOOK_FIELDS = {"url", "events", "secret", "active"}


class WebhookRecords(Records):
    """Subscriptions (create, update, disable, ping) and queueing deliveries for them."""

    def create_webhook(self, attrs: dict[str, Any]) -> Record:
        check_keys(attrs, WEBHOOK_FIELDS, required=("url", "events"))
        with self.lock:
            secret = attrs.get("secret")
            record = {
                "url": check_url(attrs["url"]),
                "events": check_events(attrs["events"]),
                "active": want_bool(attrs.get("active", True), "/data/attributes/active"),
                "failure_count": 0,
                "disabled_reason": None,
                "secret": check_secret(secret) if secret is not None else secrets.token_hex(24),
            }
            return self.insert("webhooks", record)

    def update_webhook(
        self, webhook_id: int, attrs: dict[str, Any], if_match: int | None
    ) -> Record:
        with self.lock:
            hook = self.get("webhooks", webhook_id)
            self.check_version(hook, if_match)
            check_keys(attrs, WEBHOOK_FIELDS, read_only={"failure_count"})
            changes: dict[str, Any] = {}
            if "url" in attrs:
                changes["url"] = check_url(attrs["url"])
            if "events" in attrs:
                changes["events"] = check_events(attrs["events"])
            if "secret" in attrs:
                changes["secret"] = check_secret(attrs["secret"])
            if "active" in attrs:
                changes["active"] = want_bool(attrs["active"], "/data/attributes/active")
                if changes["active"]:
                    changes.update(failure_count=0, disabled_reason=None)
            self.apply(hook, changes)
            return hook

    def delete_webhook(self, webhook_id: int) -> None:
        with self.lock:
            self.get("webhooks", webhook_id)
            del self.webhooks[webhook_id]
            self.abandon(webhook_id)

    def disable_webhook(self, hook: Record, reason: str) -> None:
        hook.update(active=False, disabled_reason=reason)
        hook["version"] += 1
        hook["updated_at"] = utcnow()
        self.abandon(hook["id"])

    def abandon(self, webhook_id: int) -> None:
        for delivery in self.deliveries.values():
            if delivery["webhook_id"] == webhook_id and delivery["status"] == "pending":
                delivery["status"] = "abandoned"

    def ping(self, webhook_id: int) -> Record:
        with self.lock:
            hook = self.get("webhooks", webhook_id)
            if not hook["active"]:
                raise invalid(
                    "webhook is disabled; PATCH active=true first", "/data/attributes/active"
                )
            return self.enqueue(hook, "ping", {"type": "webhooks", "id": str(hook["id"])}, {})

    # ---------------------------------------------------------------- deliveries

    def emit(self, event: str, kind: str, record: Record, meta: dict[str, Any]) -> None:
        """Queue one delivery per active subscription to `event`; the sender threads post it."""
        snapshot = {
            "type": kind,
            "id": str(record["id"]),
            "attributes": render.snapshot(self, kind, record),
        }
        for hook in self.webhooks.values():
            if hook["active"] and event in hook["events"]:
                self.enqueue(hook, event, snapshot, meta)

    def enqueue(
        self, hook: Record, event: str, data: dict[str, Any], meta: dict[str, Any]
    ) -> Record:
        delivery_id = str(uuid.uuid4())
        created = utcnow()
        payload = {
            "id": delivery_id,
            "type": event,
            "created_at": fmt_utc(created),
            "data": data,
            "meta": {**meta, "tenant": self.tenant},
        }
        delivery = {
            "id": delivery_id,
            "webhook_id": hook["id"],
            "event": event,
            "created_at": created,
            "status": "pending",
            "body": json_bytes(payload),
            "attempts": [],
            "faults": [],
        }
        self.deliveries[delivery_id] = delivery
        self.dispatch(delivery)
        return delivery

    def dispatch(self, delivery: Record) -> None:
        """Put a new delivery in the outbox, as the armed delivery faults say."""
        if self.faults.fire("delivery_drop") is not None:
            delivery.update(status="dropped", faults=["drop"])
            return
        due = time.monotonic()
        delay = self.faults.fire("delivery_delay")
        if delay is not None:
            due += delay["seconds"]
            delivery["faults"].append("delay")
        if self.faults.fire("delivery_duplicate") is not None:
            delivery["faults"].append("duplicate")
            self.schedule(delivery["id"], due, is_copy=True)
        reorder = self.faults.fire("delivery_reorder")
        if reorder is not None:
            delivery["faults"].append("reorder")
            self.held.append(
                (time.monotonic(), delivery["id"], reorder["batch"], reorder["hold_seconds"])
            )
        else:
            self.schedule(delivery["id"], due, is_copy=False)
        self.changed.notify_all()

    def schedule(self, delivery_id: str, due: float, *, is_copy: bool) -> None:
        heapq.heappush(self.outbox, (due, next(self.sequence), delivery_id, is_copy))
        self.changed.notify_all()


def json_bytes(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


def check_url(value: Any) -> str:
    """https only, except plain http to this machine (the emulator's one concession)."""
    pointer = "/data/attributes/url"
    url = want_str(value, pointer)
    parts = urlsplit(url)
    local = parts.hostname in ("127.0.0.1", "localhost", "::1")
    if (parts.scheme == "https" and parts.hostname) or (parts.scheme == "http" and local):
        return url
    raise invalid(f"url must be https (http only to localhost), got {url!r}", pointer)


def check_events(value: Any) -> list[str]:
    pointer = "/data/attributes/events"
    if not isinstance(value, list) or not value:
        raise invalid("events must be a non-empty list", pointer)
    unknown = [e for e in value if e not in EVENTS]
    if unknown:
        raise invalid(f"unknown events {unknown}; known: {list(EVENTS)}", pointer)
    return sorted(set(value))


def check_secret(value: Any) -> str:
    secret = want_str(value, "/data/attributes/secret")
    if len(secret) < 16:
        raise invalid("secret must be at least 16 characters", "/data/attributes/secret")
    return secret
