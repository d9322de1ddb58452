"""Webhook subscriptions (scope webhooks:manage), a test ping, and each one's delivery log.

The signing secret is shown once, in the answer to the create; deliveries themselves are sent by
the sender threads (deliveries.py).
"""

from __future__ import annotations

from flask import Blueprint, Response

from emulators.coconut import render
from emulators.coconut.listing import filters, listing, plain
from emulators.coconut.wire import API, base_url, created, document, if_match, request_data, store

bp = Blueprint("webhooks", __name__, url_prefix=API)
DELIVERY_LOG_LENGTH = 100


@bp.get("/webhooks")
def webhooks() -> Response:
    filters("webhooks")
    with store().lock:
        return listing("webhooks", list(store().webhooks.values()), plain("webhooks"))


@bp.post("/webhooks")
def create_webhook() -> Response:
    data = request_data("webhooks", None)
    hook = store().create_webhook(data.get("attributes", {}))
    with store().lock:
        body = {"data": render.webhook_json(store(), hook, base_url(), with_secret=True)}
        response = document(body, 201)
    return created(response, "webhooks", hook["id"])


@bp.get("/webhooks/<int:webhook_id>")
def webhook(webhook_id: int) -> Response:
    with store().lock:
        hook = store().get("webhooks", webhook_id)
        return document({"data": render.webhook_json(store(), hook, base_url())})


@bp.patch("/webhooks/<int:webhook_id>")
def patch_webhook(webhook_id: int) -> Response:
    data = request_data("webhooks", webhook_id)
    hook = store().update_webhook(webhook_id, data.get("attributes", {}), if_match())
    with store().lock:
        return document({"data": render.webhook_json(store(), hook, base_url())})


@bp.delete("/webhooks/<int:webhook_id>")
def delete_webhook(webhook_id: int) -> Response:
    store().delete_webhook(webhook_id)
    return Response(status=204)


@bp.post("/webhooks/<int:webhook_id>/test")
def ping_webhook(webhook_id: int) -> Response:
    delivery = store().ping(webhook_id)
    with store().lock:
        return document({"data": render.delivery_resource(delivery)}, 202)


@bp.get("/webhooks/<int:webhook_id>/deliveries")
def webhook_deliveries(webhook_id: int) -> Response:
    """The newest deliveries first."""
    with store().lock:
        store().get("webhooks", webhook_id)
        rows = [d for d in store().deliveries.values() if d["webhook_id"] == webhook_id]
        rows.sort(key=lambda d: d["created_at"], reverse=True)
        latest = rows[:DELIVERY_LOG_LENGTH]
        return document({"data": [render.delivery_resource(d) for d in latest]})
