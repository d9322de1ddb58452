"""Admin pages and the guard every admin route uses: sign-in, CSRF, the Exchange settings.

`init_app(app)` wires them into the app factory: session cookies signed with a key derived
from EXSYNC_SECRET_KEY (Secure when the public URL is https, HttpOnly, SameSite=Lax), CSRF on
every state-changing request except the webhook receivers (they authenticate by signature or
clientState) and bearer-token API calls (no cookie, so no cross-site forgery), the security
headers on every admin answer (webhooks.admin.headers), and the blueprints. Without
EXSYNC_SECRET_KEY the app still serves the receivers and health checks (`exsync web` refuses
to start without it); the admin pages then answer 503 and say why.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from flask import Flask, Response, request
from flask_wtf.csrf import CSRFError, CSRFProtect

from core.secrets import SETTING, SecretBox
from webhooks.admin import api, auth, disconnect, exchange, headers, pages, users

log = logging.getLogger(__name__)
csrf = CSRFProtect()
SESSION_HOURS = 8


def init_app(app: Flask) -> None:
    settings = app.extensions["exsync"].settings
    box = SecretBox(settings.secret_key) if settings.secret_key else None
    app.extensions["exsync_secrets"] = box
    if box is not None:
        app.secret_key = box.derive("exsync admin session cookie")
    else:
        log.warning("admin.disabled", extra={"reason": f"{SETTING} is not set"})
    app.config.update(
        SESSION_COOKIE_NAME="exsync_admin",
        SESSION_COOKIE_SECURE=settings.public_url.startswith("https://"),
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        PERMANENT_SESSION_LIFETIME=timedelta(hours=SESSION_HOURS),
        WTF_CSRF_CHECK_DEFAULT=False,
    )
    csrf.init_app(app)
    app.before_request(_csrf_unless_exempt)
    app.register_error_handler(CSRFError, _csrf_failed)
    headers.init_app(app)
    app.register_blueprint(auth.bp)
    app.register_blueprint(exchange.bp)
    app.register_blueprint(users.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(disconnect.bp)
    app.add_template_filter(_when, "when")


def _csrf_unless_exempt() -> None:
    if request.path.startswith("/webhooks/") or auth.bearer_token() is not None:
        return
    if request.endpoint != "admin_auth.sign_in" and auth.signed_in() is None:
        return  # nobody is signed in: the admin guard answers 401 and says why
    csrf.protect(apply_exemptions=True)


def _csrf_failed(exc: CSRFError) -> tuple[Response | str, int]:
    log.info("admin.csrf_refused", extra={"reason": exc.description, "path": request.path})
    reason = (
        "This form was not sent from this site's own page, or the page was open too long. "
        "Go back, reload the page and submit it again."
    )
    return pages.refusal(400, "Form expired or not from this site", reason)


def _when(epoch: int) -> str:
    """An instant for a table cell: "—" for never, else UTC to the minute."""
    if not epoch:
        return "—"
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M UTC")
