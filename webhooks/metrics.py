"""`/metrics`: this web app's counters, summed over its gunicorn processes, and the shared
state gauges read from Redis.

The web port is public (Graph and Coconut must reach the receivers), so /metrics answers only a
scraper that sends `Authorization: Bearer` with EXSYNC_METRICS_TOKEN; without that setting it
is off. The workers and the scheduler serve their own counters on ports of their own, which
stay internal and need no token.
"""

from __future__ import annotations

import hmac
import os

from flask import Blueprint, Response, current_app, jsonify
from flask.typing import ResponseReturnValue
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from core.metrics import StateCollector
from webhooks.admin.auth import bearer_token

bp = Blueprint("metrics", __name__)

# Every 401 says how to authenticate (RFC 9110 §11.6.1).
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="exsync metrics"'}
OFF = (
    "metrics are off on the web port: set EXSYNC_METRICS_TOKEN and scrape with "
    "`Authorization: Bearer <token>`"
)


@bp.get("/metrics")
def metrics() -> ResponseReturnValue:
    services = current_app.extensions["exsync"]
    token = services.settings.metrics_token
    if not token:
        return jsonify(error="Forbidden", reason=OFF), 403
    if not _bearer_is(token):
        reason = "send EXSYNC_METRICS_TOKEN as `Authorization: Bearer <token>`"
        return jsonify(error="Unauthorized", reason=reason), 401, CHALLENGE
    own = REGISTRY
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        own = CollectorRegistry()
        MultiProcessCollector(own)
    state = CollectorRegistry()
    state.register(StateCollector(services.queue))
    body = generate_latest(own) + generate_latest(state)
    return Response(body, content_type=CONTENT_TYPE_LATEST)


def _bearer_is(token: str) -> bool:
    sent = bearer_token()
    return sent is not None and hmac.compare_digest(sent.encode(), token.encode())
