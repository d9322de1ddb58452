"""The Flask app factory: webhook receivers, health, metrics, the admin pages and API, and the
OpenAPI description of the app's own endpoints."""

from __future__ import annotations

import redis
from flask import Flask, jsonify
from rq import Queue
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix

from core import audit, jobs, logs, store
from core.settings import Settings, load_settings
from webhooks import admin, coconut, graph, health, metrics, openapi, request_id


def create_app(settings: Settings | None = None) -> Flask:
    """The app; SettingsError without a Coconut webhook secret, whatever serves it (an empty
    one would accept bodies signed with the empty key; core.settings refuses a weak one)."""
    settings = (settings or load_settings()).require("coconut_webhook_secret")
    # gunicorn configures only its own loggers; without this the app's lines would be lost.
    logs.configure(settings.log_level, settings.log_format)
    logs.redact(*settings.secrets)
    audit.configure(settings)  # the admin's hold decisions are audit events too
    app = Flask(__name__)
    app.wsgi_app = ProxyFix(app.wsgi_app, x_for=settings.trusted_proxies, x_proto=0)  # type: ignore[method-assign]
    request_id.init_app(app)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    jobs.configure(settings.job_retries, settings.job_timeout)
    conn = store.connect_service(settings)
    app.extensions["exsync"] = Services(settings, conn, jobs.queue(settings.queue_name, conn))
    app.register_blueprint(coconut.bp)
    app.register_blueprint(graph.bp)
    health.init_app(app)
    app.register_blueprint(metrics.bp)
    app.register_blueprint(openapi.bp)
    admin.init_app(app)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(redis.RedisError, _redis_down)
    return app


class Services:
    """What a request handler may use: settings, Redis and the queue. No Graph, no Coconut."""

    def __init__(self, settings: Settings, conn: redis.Redis, queue: Queue) -> None:
        self.settings = settings
        self.redis = conn
        self.queue = queue


def _http_error(exc: HTTPException):  # type: ignore[no-untyped-def]
    return jsonify(error=exc.name, reason=exc.description), exc.code


def _redis_down(exc: redis.RedisError):  # type: ignore[no-untyped-def]
    # The sender retries on 503; accepting without a queue would lose the change.
    return jsonify(error="Service Unavailable", reason="queue unavailable, retry later"), 503
