"""The emulator's HTTP face: Coconut's admin ("B2B") API, its token endpoint, and the controls.

Everything under `/api/v2/b2b` follows core/coconut/openapi.yaml: JSON:API documents,
`filter[...]`/`include`/`sort`/`page`/`limit` on collections, `links.next` for paging, errors as
`{"errors": [...]}`. Every call but the token endpoint needs a bearer token with the right scope,
counts against the client's rate limit, and may be hit by an armed `api_error` fault (guard.py).
Requests are checked strictly (unknown filters, attributes and parameters are errors), because a
kind emulator hides the client bugs the real service would expose.

One blueprint per concern: oauth.py (the token), directory.py (users, assignments, locations,
services, clients), appointments.py, absences.py, webhooks.py, and control.py for
`/_emulator/...`, which is not Coconut: it lets tests and the demo inspect state and inject faults.
"""

from __future__ import annotations

from flask import Flask, Response
from werkzeug.exceptions import HTTPException

from emulators.coconut import absences, appointments, control, directory, guard, oauth, webhooks
from emulators.coconut.jsonapi import ApiError
from emulators.coconut.store import Store
from emulators.coconut.wire import API, document

__all__ = ["API", "create_app"]
BLUEPRINTS = (oauth.bp, directory.bp, appointments.bp, absences.bp, webhooks.bp, control.bp)
HTTP_ERROR_CODES = {404: "not_found", 405: "method_not_allowed", 415: "unsupported_media_type"}


def create_app(store: Store) -> Flask:
    """The Flask app over one store; the sender threads are started by the caller."""
    app = Flask(__name__)
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions["coconut_store"] = store
    app.before_request(guard.check)
    app.after_request(guard.count)
    for blueprint in BLUEPRINTS:
        app.register_blueprint(blueprint)
    app.register_error_handler(ApiError, api_error)
    app.register_error_handler(HTTPException, http_error)
    return app


def api_error(exc: ApiError) -> Response:
    if exc.code in oauth.OAUTH_ERRORS:
        response = oauth.oauth_error(exc)
    else:
        response = document(exc.document(), exc.status)
    response.headers.update(exc.headers)
    return response


def http_error(exc: HTTPException) -> Response:
    status = exc.code or 500
    code = HTTP_ERROR_CODES.get(status, "bad_request")
    error = ApiError(status, code, exc.name, exc.description or exc.name)
    return document(error.document(), status)
