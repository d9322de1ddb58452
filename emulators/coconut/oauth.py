"""`POST /oauth/token`: OAuth2 client credentials, the one call that needs no token.

Credentials come in the form or as HTTP Basic (client_secret_basic, RFC 6749 §2.3.1). Errors
have RFC 6749's shape, not JSON:API (the app's ApiError handler knows these codes).
"""

from __future__ import annotations

import base64
import binascii

from flask import Blueprint, Response, current_app, json, request

from emulators.coconut.jsonapi import ApiError
from emulators.coconut.wire import API, store

bp = Blueprint("oauth", __name__, url_prefix=API)
# ApiError codes answered as `{"error", "error_description"}`.
OAUTH_ERRORS = ("invalid_client", "invalid_scope", "unsupported_grant_type", "invalid_request")


@bp.post("/oauth/token")
def token() -> Response:
    form = request.form
    client_id, client_secret = form.get("client_id", ""), form.get("client_secret", "")
    basic = basic_credentials()
    if basic is not None:
        client_id, client_secret = basic
    if form.get("grant_type") != "client_credentials":
        raise ApiError(
            400,
            "unsupported_grant_type",
            "unsupported_grant_type",
            f"grant_type must be client_credentials, got {form.get('grant_type')!r}",
        )
    if not client_id or not client_secret:
        raise ApiError(
            400,
            "invalid_request",
            "invalid_request",
            "client_id and client_secret are required",
        )
    body = store().tokens.issue(client_id, client_secret, form.get("scope"))
    response = current_app.response_class(json.dumps(body), mimetype="application/json")
    response.headers["Cache-Control"] = "no-store"
    return response


def basic_credentials() -> tuple[str, str] | None:
    """client_secret_basic (RFC 6749 §2.3.1), which OAuth clients may use instead of the form."""
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        client_id, _, secret = base64.b64decode(value).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        raise ApiError(
            400, "invalid_request", "invalid_request", "malformed Basic credentials"
        ) from None
    return client_id, secret


def oauth_error(exc: ApiError) -> Response:
    """An OAuth endpoint error in RFC 6749's shape."""
    return current_app.response_class(
        json.dumps({"error": exc.code, "error_description": exc.detail}),
        status=exc.status,
        mimetype="application/json",
    )
