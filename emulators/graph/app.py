"""The Graph emulator's Flask app: Entra endpoints, Graph v1.0 and the control API.

Every failure under /v1.0 is rendered as Graph's error envelope in one place; unexpected
exceptions become a logged 500 with that same envelope rather than an HTML page.
"""

from __future__ import annotations

import logging

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException

from emulators.graph import api, auth, batch, control, subscriptions
from emulators.graph.auth import Tokens
from emulators.graph.delta import DeltaStates
from emulators.graph.errors import GraphError, error_body
from emulators.graph.faults import Faults
from emulators.graph.notify import Notifier
from emulators.graph.store import Store
from emulators.graph.throttle import Throttle

log = logging.getLogger(__name__)


def create_app(store: Store, notifier: Notifier, faults: Faults) -> Flask:
    settings = store.settings
    app = Flask(__name__)
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions.update(
        graph_store=store,
        graph_faults=faults,
        graph_notifier=notifier,
        graph_tokens=Tokens(settings.token_lifetime),
        graph_throttle=Throttle(
            settings.max_concurrency, settings.rate_limit, settings.rate_window
        ),
        graph_delta=DeltaStates(),
        graph_subscriptions=subscriptions.Subscriptions(store, notifier),
    )
    app.register_blueprint(auth.bp)
    app.register_blueprint(batch.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(control.bp)

    @app.errorhandler(GraphError)
    def graph_error(exc: GraphError) -> Response:
        response = jsonify(
            error_body(exc.code, exc.message, request.headers.get("client-request-id"))
        )
        response.status_code = exc.status
        response.headers.update(exc.headers)
        return response

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        code = {404: "ResourceNotFound", 405: "MethodNotAllowed"}.get(status, "BadRequest")
        message = (
            f"Resource not found for the segment '{request.path.rsplit('/', 1)[-1]}'."
            if status == 404
            else exc.description or exc.name
        )
        response = jsonify(error_body(code, message))
        response.status_code = status
        return response

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Response:
        log.exception("unexpected error on %s %s", request.method, request.path)
        response = jsonify(error_body("InternalServerError", f"{type(exc).__name__}"))
        response.status_code = 500
        return response

    return app
