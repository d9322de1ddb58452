"""`/metrics`: this web app's counters, summed over its gunicorn processes, and the shared
state gauges read from Redis."""

from __future__ import annotations

import os

from flask import Blueprint, Response, current_app
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from core.metrics import StateCollector

bp = Blueprint("metrics", __name__)


@bp.get("/metrics")
def metrics() -> Response:
    services = current_app.extensions["exsync"]
    own = REGISTRY
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        own = CollectorRegistry()
        MultiProcessCollector(own)
    state = CollectorRegistry()
    state.register(StateCollector(services.redis, services.settings.queue_name))
    body = generate_latest(own) + generate_latest(state)
    return Response(body, content_type=CONTENT_TYPE_LATEST)
