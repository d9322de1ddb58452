"""Liveness and readiness: /healthz says the process answers; /readyz that the queue (Redis)
answers and that a Graph token can be had with the credential the workers would use now.

The Graph check asks Entra for a token, so its result is kept per process for CACHE_SECONDS
(load balancers probe every few seconds); a change to the admin's connection is checked at
once. While one thread asks, the others answer with the previous result. A deployment with no
Graph configuration at all reports the check `not_configured` and is ready: web-only setups
(receivers and admin pages) need none. Reasons name the failed check in plain words and never
carry a secret.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import redis
from flask import Blueprint, Flask, Response, current_app, jsonify

from core import connection
from core.microsoft import graph_access
from core.settings import Settings

log = logging.getLogger(__name__)
bp = Blueprint("health", __name__)

CACHE_SECONDS = 45.0
EXTENSION = "exsync_readiness"
# What decides which credential is used and whether it works; a change means check again.
_IDENTITY = ("status", "connected_at", "impersonation", "tenant_id", "client_id", "graph_url",
             "authority", "client_secret", "refresh_token")  # fmt: skip


def init_app(app: Flask) -> None:
    app.extensions[EXTENSION] = GraphTokenCheck()
    app.register_blueprint(bp)


@bp.get("/healthz")
def healthz() -> Response:
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz() -> Response | tuple[Response, int]:
    services = current_app.extensions["exsync"]
    try:
        services.redis.ping()
        # Redis may also go between the two: the Graph check reads the connection from it.
        graph = current_app.extensions[EXTENSION].result(services.settings, services.redis)
    except redis.RedisError as exc:
        down = f"Redis does not answer ({type(exc).__name__})"
        checks = {
            "queue": {"status": "failed", "reason": down},
            "graph_token": {"status": "skipped", "reason": "the connection is read from Redis"},
        }
        reason = "queue unavailable: Redis does not answer, retry later"
        return jsonify(error="Service Unavailable", reason=reason, checks=checks), 503
    checks = {"queue": {"status": "ok"}, "graph_token": graph}
    if graph["status"] == "failed":
        reason = f"no Graph token: {graph['reason']}"
        return jsonify(error="Service Unavailable", reason=reason, checks=checks), 503
    return jsonify(status="ready", checks=checks)


@dataclass
class GraphTokenCheck:
    """The last Graph check of this process and what it was made for."""

    key: bytes = b""
    at: float = float("-inf")
    check: dict[str, Any] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def result(self, settings: Settings, conn: redis.Redis) -> dict[str, Any]:
        key = hashlib.sha256(
            b"\0".join(v or b"" for v in conn.hmget(connection.CONNECTION_KEY, *_IDENTITY))
        ).digest()
        if self._fresh(key):
            return self.check
        # Only the same question may be answered from the last result while someone asks.
        if not self.lock.acquire(blocking=not (self.check and self.key == key)):
            return self.check
        try:
            if not self._fresh(key):
                self.check, self.key, self.at = _probe(settings, conn), key, time.monotonic()
            return self.check
        finally:
            self.lock.release()

    def _fresh(self, key: bytes) -> bool:
        return self.key == key and time.monotonic() - self.at < CACHE_SECONDS


def _probe(settings: Settings, conn: redis.Redis) -> dict[str, Any]:
    try:
        access = graph_access.current(settings, conn, **graph_access.PROBE_TRANSPORT)
    except graph_access.NotConfigured as exc:
        return {"status": "not_configured", "reason": str(exc)}
    except graph_access.Misconfigured as exc:
        whose = "the admin's connection" if exc.source == "connection" else "the settings"
        return _failed(exc.source, f"the app registration in {whose} is not usable: {exc}")
    try:
        problem = graph_access.token_problem(access)
    except redis.RedisError:
        raise  # the queue check's to report, not a Graph problem to keep for a while
    except Exception as exc:  # a probe answers, whatever broke; the log has the traceback
        log.warning("health.graph_token_error", exc_info=True)
        problem = f"the token request failed ({type(exc).__name__})"
    if problem is not None:
        return _failed(access.source, problem)
    return {"status": "ok", "source": access.source}


def _failed(source: str, problem: str) -> dict[str, Any]:
    log.warning("health.graph_token_failed", extra={"source": source, "reason": problem})
    return {"status": "failed", "source": source, "reason": problem}
