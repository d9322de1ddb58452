"""Webhook sender threads: sign, POST, log every attempt, retry with backoff, disable.

Delivery follows research/coconut.md §7.6. The body of a delivery is fixed when the change
happens; each attempt gets a new `X-Coconut-Timestamp` and a new `v2=` signature over
`"{timestamp}.{delivery id}.{body}"`, so a receiver's replay window holds for retries too, and a
captured delivery cannot pass under another delivery id. Signing is written out here on purpose:
the emulator must not share code with the receiver it is testing.
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import httpx

from emulators.coconut.jsonapi import fmt_utc, utcnow
from emulators.coconut.store import Store

log = logging.getLogger(__name__)

# Seconds before retry 1, 2, ...; multiplied by --retry-scale. 8 attempts over about 1.5 days.
RETRY_SCHEDULE = (30, 120, 600, 3600, 21600, 43200, 86400)
TIMEOUT_SECONDS = 10.0
USER_AGENT = "Coconut-Webhooks/2 (emulator)"
REORDER_STAGGER = 0.05


def signature(secret: str, timestamp: int, delivery_id: str, body: bytes) -> str:
    """`v2=<hex HMAC-SHA256(secret, "{timestamp}.{delivery id}.{raw body}")>`."""
    message = str(timestamp).encode() + b"." + delivery_id.encode() + b"." + body
    return "v2=" + hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Job:
    delivery_id: str
    is_copy: bool
    webhook_id: int
    url: str
    secret: str
    event: str
    body: bytes


class Sender:
    """A few daemon threads draining the store's outbox; parallel, so order is not promised."""

    def __init__(self, store: Store, workers: int = 4) -> None:
        self.store = store
        self.stopping = False
        self.threads = [
            threading.Thread(target=self.run, name=f"coconut-sender-{n}", daemon=True)
            for n in range(workers)
        ]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def stop(self) -> None:
        with self.store.lock:
            self.stopping = True
            self.store.changed.notify_all()
        for thread in self.threads:
            thread.join(timeout=TIMEOUT_SECONDS + 1)

    def run(self) -> None:
        with httpx.Client(timeout=TIMEOUT_SECONDS) as http:
            while True:
                with self.store.lock:
                    job = self.claim()
                    if job is None:
                        return
                self.record(job, *self.post(http, job))

    def claim(self) -> Job | None:
        """Wait (lock held) for the next due delivery; None once stopping."""
        store = self.store
        while not self.stopping:
            now = time.monotonic()
            self.release_held(now)
            waits = [60.0]
            if store.held:
                waits.append(store.held[0][0] + store.held[0][3] - now)
            if store.outbox and store.outbox[0][0] <= now:
                _, _, delivery_id, is_copy = heapq.heappop(store.outbox)
                job = self.job(delivery_id, is_copy)
                if job is not None:
                    return job
                continue
            if store.outbox:
                waits.append(store.outbox[0][0] - now)
            store.changed.wait(max(0.001, min(waits)))
        return None

    def release_held(self, now: float) -> None:
        """Reorder fault: once a batch is held (or waited long enough), send newest first."""
        held = self.store.held
        if not held:
            return
        held_since, _, batch, hold_seconds = held[0]
        if len(held) < batch and now - held_since < hold_seconds:
            return
        for n, (_, delivery_id, _, _) in enumerate(reversed(held)):
            self.store.schedule(delivery_id, now + n * REORDER_STAGGER, is_copy=False)
        held.clear()

    def job(self, delivery_id: str, is_copy: bool) -> Job | None:
        delivery = self.store.deliveries.get(delivery_id)
        if delivery is None or (delivery["status"] != "pending" and not is_copy):
            return None
        hook = self.store.webhooks.get(delivery["webhook_id"])
        if hook is None or not hook["active"]:
            return None
        return Job(
            delivery_id,
            is_copy,
            hook["id"],
            hook["url"],
            hook["secret"],
            delivery["event"],
            delivery["body"],
        )

    def post(self, http: httpx.Client, job: Job) -> tuple[int, int | None, str | None]:
        """One attempt, outside the lock: (timestamp, status code, transport error)."""
        timestamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "X-Coconut-Webhook-Id": str(job.webhook_id),
            "X-Coconut-Delivery-Id": job.delivery_id,
            "X-Coconut-Event": job.event,
            "X-Coconut-Timestamp": str(timestamp),
            "X-Coconut-Signature": signature(job.secret, timestamp, job.delivery_id, job.body),
        }
        try:
            response = http.post(job.url, content=job.body, headers=headers)
        except httpx.TimeoutException:
            return timestamp, None, "timeout"
        except httpx.TransportError as exc:
            return timestamp, None, type(exc).__name__
        return timestamp, response.status_code, None

    def record(self, job: Job, timestamp: int, status: int | None, error: str | None) -> None:
        """Log the attempt; on failure retry later, or give up, or disable the subscription."""
        store = self.store
        with store.lock:
            delivery = store.deliveries[job.delivery_id]
            delivery["attempts"].append(
                {
                    "attempt": len(delivery["attempts"]) + 1,
                    "attempted_at": fmt_utc(utcnow()),
                    "timestamp": timestamp,
                    "status_code": status,
                    "error": error,
                    "copy": job.is_copy,
                }
            )
            hook = store.webhooks.get(job.webhook_id)
            ok = status is not None and 200 <= status < 300
            log.info(
                "coconut_emulator.delivery_attempt delivery_id=%s event=%s status=%s error=%s",
                job.delivery_id, job.event, status, error,
            )  # fmt: skip
            if ok:
                if not job.is_copy:
                    delivery["status"] = "delivered"
                if hook is not None:
                    hook["failure_count"] = 0
                return
            if status == 410 and hook is not None and hook["active"]:
                delivery["status"] = "failed"
                store.disable_webhook(hook, "gone")
                return
            if not job.is_copy and delivery["status"] == "pending":
                self.retry_or_fail(delivery)
            if hook is None or not hook["active"]:
                return
            hook["failure_count"] += 1
            if hook["failure_count"] >= store.settings.disable_after:
                store.disable_webhook(hook, "too_many_failures")

    def retry_or_fail(self, delivery: dict[str, Any]) -> None:
        store = self.store
        tries = sum(1 for a in delivery["attempts"] if not a["copy"])
        if tries >= store.settings.max_attempts:
            delivery["status"] = "failed"
            return
        base = RETRY_SCHEDULE[min(tries, len(RETRY_SCHEDULE)) - 1]
        jitter = 1 + store.rng.uniform(-0.1, 0.1)
        due = time.monotonic() + base * store.settings.retry_scale * jitter
        store.schedule(delivery["id"], due, is_copy=False)
