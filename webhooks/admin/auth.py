"""Who is asking: admin sign-in and sign-out, server-side sessions, and `require_admin`.

A session is a random id in the signed cookie and a Redis key (core.admin_accounts), so signing
out, removing the account or setting its password ends it everywhere at once. Every request
re-reads the account's role: demoting an admin takes effect on their next click. Failed
sign-ins slow down further attempts from the same address and at the same account
(webhooks.admin.throttle), answered 429 with Retry-After; nobody can lock an account.

`require_admin` accepts a session, or `Authorization: Bearer <token>` from
`exsync admin add-token` (then only the token counts, never a cookie sent alongside it):

    no credentials, unknown or expired session, bad token  → 401 with a Bearer challenge
                                                             (pages: redirect to sign-in)
    signed in, but not an admin account                    → 403 naming the account
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import wraps
from typing import ParamSpec, TypeVar
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    current_app,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from werkzeug.wrappers import Response as BaseResponse

from core import admin_accounts
from webhooks.admin import pages, throttle

log = logging.getLogger(__name__)
bp = Blueprint("admin_auth", __name__)

P = ParamSpec("P")
R = TypeVar("R")

SESSION_SECONDS = 8 * 3600
# Every 401 says how to authenticate (RFC 9110 §11.6.1): scripts use a bearer token.
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="exsync admin"'}
WHY = {
    "signed-out": "Sign in with an admin account to see that page.",
    "expired": "Your session ended. Sign in again.",
    "signed-out-now": "You are signed out.",
}
WRONG = "Wrong email or password."
TOO_MANY = {"address": "from this network address", "account": "for this account"}


def bearer_token() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


def signed_in() -> admin_accounts.Account | None:
    """The account of this browser's live session, or None."""
    sid = session.get("sid")
    if not isinstance(sid, str):
        return None
    return admin_accounts.session_account(current_app.extensions["exsync"].redis, sid)


def require_admin(view: Callable[P, R]) -> Callable[P, R | tuple[object, int] | BaseResponse]:
    """Let the view run only for an admin session or an admin API token (see module doc)."""

    @wraps(view)
    def guarded(*args: P.args, **kwargs: P.kwargs) -> R | tuple[object, int] | BaseResponse:
        conn = current_app.extensions["exsync"].redis
        token = bearer_token()
        if token is not None:
            name = admin_accounts.token_name(conn, token)
            if name is None:
                log.info("admin.token_refused", extra={"path": request.path})
                answer = pages.refusal(401, "Unauthorized", "the token is unknown or revoked")
                return answer[0], 401, CHALLENGE
            g.admin = f"token:{name}"
            return view(*args, **kwargs)
        if current_app.extensions["exsync_secrets"] is None:
            return pages.refusal(
                503,
                "Admin pages are off",
                "EXSYNC_SECRET_KEY is not set on this server; the admin pages need it to keep "
                "sessions and secrets. Set it and restart.",
            )
        account = signed_in()
        if account is None:  # no session, or its account was removed or its password set
            why = "expired" if "sid" in session else "signed-out"
            session.clear()
            if pages.wants_html():
                here = request.full_path.rstrip("?")
                return redirect(url_for("admin_auth.sign_in", next=here, why=why))
            return pages.refusal(401, "Unauthorized", WHY[why])[0], 401, CHALLENGE
        g.signed_in = account.email  # the layout offers to sign out, also on a 403 page
        if account.role != "admin":
            log.info("admin.forbidden", extra={"path": request.path, "role": account.role})
            return pages.refusal(
                403,
                "Admins only",
                f"You are signed in as {account.email}, which is not an admin account. Only "
                "admins can see settings and the admin API. Sign out and sign in with an admin "
                "account, or ask an admin to run `exsync admin add-user` for you.",
            )
        g.admin = f"user:{account.email}"
        return view(*args, **kwargs)

    return guarded


def _safe_next(target: str | None) -> str:
    """Only a path on this site: an absolute URL here would be an open redirect."""
    if not target:
        return url_for("admin_exchange.configuration")
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return url_for("admin_exchange.configuration")
    return target


@bp.route("/admin/sign-in", methods=["GET", "POST"])
def sign_in() -> tuple[object, int] | BaseResponse:
    if current_app.extensions["exsync_secrets"] is None:
        return pages.refusal(503, "Admin pages are off", "EXSYNC_SECRET_KEY is not set.")
    next_url = _safe_next(request.values.get("next"))
    why = WHY.get(request.args.get("why", ""), "")
    if request.method == "GET":
        page = render_template("admin/sign_in.html", next=next_url, why=why, error="", email="")
        return page, 200
    typed, password = request.form.get("email", ""), request.form.get("password", "")
    try:
        email = admin_accounts.normalise_email(typed)
    except admin_accounts.AdminUserError:
        # Before any Redis use: no account has that address, and a huge one must not become
        # a key.
        log.info("admin.signin_failed", extra={"reason": "not an email address"})
        return _sign_in_page(next_url, WRONG, typed[: admin_accounts.MAX_EMAIL]), 401
    conn = current_app.extensions["exsync"].redis
    address = throttle.client(request.remote_addr)
    refused = throttle.admit(conn, address, email)
    if refused is not None:
        return _throttled(refused, next_url, email)
    sid = admin_accounts.sign_in(conn, email, password, SESSION_SECONDS)
    if sid is None:
        log.info("admin.signin_failed", extra={"reason": "wrong email or password"})
        return _sign_in_page(next_url, WRONG, email), 401
    throttle.succeeded(conn, address, email)
    # A fresh id on every sign-in: a session id planted before sign-in is worth nothing.
    session.clear()
    session["sid"] = sid
    session.permanent = True
    log.info("admin.signed_in", extra={"account": email})
    return redirect(next_url, code=303)


def _sign_in_page(next_url: str, error: str, email: str) -> str:
    return render_template("admin/sign_in.html", next=next_url, why="", error=error, email=email)


def _throttled(refused: throttle.Throttled, next_url: str, email: str) -> BaseResponse:
    log.info("admin.signin_throttled", extra={"by": refused.by, "seconds": refused.seconds})
    at = datetime.now(UTC) + timedelta(seconds=refused.seconds)
    error = (
        f"Too many failed sign-ins {TOO_MANY[refused.by]}. Try again in "
        f"{_in_words(refused.seconds)}, after {at:%H:%M:%S} UTC."
    )
    page = current_app.make_response((_sign_in_page(next_url, error, email), 429))
    page.headers["Retry-After"] = str(refused.seconds)
    return page


def _in_words(seconds: int) -> str:
    if seconds >= 120:
        return f"{math.ceil(seconds / 60)} minutes"
    return f"{seconds} second{'s' if seconds > 1 else ''}"


@bp.post("/admin/sign-out")
def sign_out() -> BaseResponse:
    sid = session.get("sid")
    if isinstance(sid, str):
        admin_accounts.sign_out(current_app.extensions["exsync"].redis, sid)
    session.clear()
    return redirect(url_for("admin_auth.sign_in", why="signed-out-now"), code=303)
