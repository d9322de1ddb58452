"""`POST /webhooks/coconut`: Coconut's appointment, absence and user webhooks.

An ordered ladder of guards: authenticate (HMAC over the timestamp, delivery id and raw body)
→ content type → parse → filter → claim the delivery id → enqueue → 202. The body is only a
hint: the job reads the item's current state from Coconut, so order and duplicates do not
matter, and nothing but the item id is taken from it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
from dataclasses import dataclass
from typing import Any

import redis
from flask import Blueprint, Response, current_app, jsonify, request
from rq import Queue

from core import jobs, store
from core.job_kinds import JobKind
from core.metrics import NOTIFICATIONS
from webhooks.coconut_signature import SignatureError, verify

log = logging.getLogger(__name__)
bp = Blueprint("coconut_webhooks", __name__)


@dataclass(frozen=True)
class Target:
    """Which job an event asks for, and which JSON:API type its `data` must carry."""

    job: JobKind
    data_type: str


APPOINTMENT = Target(JobKind.SYNC_APPOINTMENT, "appointments")
ABSENCE = Target(JobKind.SYNC_ABSENCE, "absences")
STAFF = Target(JobKind.SYNC_STAFF, "users")

DISPATCH: dict[str, Target | None] = {
    "appointment.created": APPOINTMENT,
    "appointment.updated": APPOINTMENT,
    "appointment.rescheduled": APPOINTMENT,
    "appointment.cancelled": APPOINTMENT,
    "appointment.reassigned": APPOINTMENT,
    "absence.created": ABSENCE,
    "absence.updated": ABSENCE,
    "absence.deleted": ABSENCE,
    "user.updated": STAFF,
    "ping": None,
}


_NUMERIC_ID = re.compile(r"[0-9]{1,20}")


class BadDelivery(Exception):
    """The body cannot be a Coconut delivery we act on; `reason` goes back in the 400."""


@bp.post("/webhooks/coconut")
def receive() -> tuple[Response, int]:
    services = current_app.extensions["exsync"]
    body = request.get_data(cache=False)
    delivery_id = request.headers.get("X-Coconut-Delivery-Id", "")
    try:
        verify(
            services.settings.coconut_webhook_secret,
            request.headers.get("X-Coconut-Timestamp"),
            delivery_id,
            request.headers.get("X-Coconut-Signature"),
            body,
        )
    except SignatureError as exc:
        NOTIFICATIONS.labels(source="coconut", outcome="bad signature").inc()
        log.info("coconut.refused.signature", extra={"reason": exc.reason})
        return jsonify(error="Unauthorized", reason=exc.reason), 401
    if request.mimetype != "application/json":
        NOTIFICATIONS.labels(source="coconut", outcome="bad content type").inc()
        reason = f"Content-Type must be application/json, got {request.mimetype or 'none'!r}"
        return jsonify(error="Unsupported Media Type", reason=reason), 415
    try:
        event, target, item, version = _parse(body)
    except BadDelivery as exc:
        NOTIFICATIONS.labels(source="coconut", outcome="bad body").inc()
        log.info("coconut.refused.body", extra={"reason": str(exc)})
        return jsonify(error="Bad Request", reason=str(exc)), 400
    if target is None:
        return jsonify(status="ignored", event=event), 200
    if not store.claim_delivery(services.redis, "coconut", delivery_id):
        NOTIFICATIONS.labels(source="coconut", outcome="duplicate").inc()
        log.info("coconut.duplicate", extra={"delivery_id": delivery_id})
        return jsonify(status="duplicate", delivery_id=delivery_id), 200
    job = _enqueue_claimed(services.redis, services.queue, delivery_id, target, item, version)
    NOTIFICATIONS.labels(source="coconut", outcome="accepted").inc()
    log.info("coconut.accepted", extra={"coconut_event": event, "item": item, "job_id": job})
    return jsonify(status="accepted", job_id=job), 202


def _enqueue_claimed(
    conn: redis.Redis,
    queue: Queue,
    delivery_id: str,
    target: Target,
    item: str,
    version: int | None,
) -> str:
    """Queue the job of a delivery this request claimed, then keep the claim for the dedupe
    window. A failed enqueue releases the claim: the sender retries the 503, and its retry must
    be queued, not answered "duplicate"."""
    try:
        job = jobs.ensure_queued(queue, target.job, item, version=version)
    except Exception:
        # Redis may be gone for the release too: then the short claim lapses before the retry.
        with contextlib.suppress(redis.RedisError):
            store.release_delivery(conn, "coconut", delivery_id)
        raise
    store.keep_delivery(conn, "coconut", delivery_id)
    return job


def _parse(body: bytes) -> tuple[str, Target | None, str, int | None]:
    """(event type, what to queue, item id, the item version the delivery announces)."""
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadDelivery(f"body is not JSON: {exc.msg if hasattr(exc, 'msg') else exc}") from None
    if not isinstance(payload, dict):
        raise BadDelivery("body must be a JSON object")
    event = payload.get("type")
    if not isinstance(event, str) or event not in DISPATCH:
        raise BadDelivery(f"unknown event type, got {str(event)[:60]!r}")
    target = DISPATCH[event]
    if target is None:
        return event, None, "", None
    data = payload.get("data")
    if not isinstance(data, dict):
        raise BadDelivery("data must be an object")
    if data.get("type") != target.data_type:
        raise BadDelivery(f"{event} must carry data.type {target.data_type!r}")
    item = data.get("id")
    if isinstance(item, int) and not isinstance(item, bool):
        item = str(item)
    # ASCII digits: str.isdigit() also takes other scripts' digits, which RQ job ids refuse.
    if not isinstance(item, str) or not _NUMERIC_ID.fullmatch(item):
        raise BadDelivery(f"data.id must be a numeric id, got {str(item)[:30]!r}")
    return event, target, item, _version(data)


def _version(data: dict[str, Any]) -> int | None:
    """The announced version is a hint on a hint: one that is missing or odd only costs the
    round it could have saved, so it never refuses the delivery."""
    attributes = data.get("attributes")
    version = attributes.get("version") if isinstance(attributes, dict) else None
    is_count = isinstance(version, int) and not isinstance(version, bool) and version >= 0
    return version if is_count else None
