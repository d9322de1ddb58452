"""Who is asking: admin sign-in and sign-out, server-side sessions, and `require_admin`.

A session is a random id in the signed cookie and a Redis key `exsync:admin:session:{id}`
holding the email, so signing out (or removing the account) ends it everywhere at once. Every
request re-reads the account's role: demoting an admin takes effect on their next click.

`require_admin` accepts a session, or `Authorization: Bearer <token>` from
`exsync admin add-token` (then only the token counts, never a cookie sent alongside it):

    no credentials, unknown or expired session, bad token  → 401 with a Bearer challenge
                                                             (pages: redirect to sign-in)
    signed in, but not an admin account                    → 403 naming the account
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
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

from core import admin_accounts, store
from webhooks.admin import pages

log = logging.getLogger(__name__)
bp = Blueprint("admin_auth", __name__)

P = ParamSpec("P")
R = TypeVar("R")

SESSION_SECONDS = 8 * 3600
MAX_FAILURES = 10
FAILURE_WINDOW = 900
# Every 401 says how to authenticate (RFC 9110 §11.6.1): scripts use a bearer token.
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="exsync admin"'}
WHY = {
    "signed-out": "Sign in with an admin account to see that page.",
    "expired": "Your session ended. Sign in again.",
    "signed-out-now": "You are signed out.",
}


def _session_key(sid: str) -> str:
    return store.admin_session_key(sid)


def _failures_key(email: str) -> str:
    return store.admin_failures_key(email)


def bearer_token() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


def signed_in_email() -> str | None:
    """The email of this browser's live session, or None."""
    sid = session.get("sid")
    if not isinstance(sid, str):
        return None
    email = current_app.extensions["exsync"].redis.get(_session_key(sid))
    return email.decode() if email else None


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
        email = signed_in_email()
        role = admin_accounts.user_role(conn, email) if email else None
        if email is None or role is None:  # no session, or its account was removed
            why = "expired" if "sid" in session else "signed-out"
            session.clear()
            if pages.wants_html():
                here = request.full_path.rstrip("?")
                return redirect(url_for("admin_auth.sign_in", next=here, why=why))
            return pages.refusal(401, "Unauthorized", WHY[why])[0], 401, CHALLENGE
        g.signed_in = email  # the layout offers to sign out, also on a 403 page
        if role != "admin":
            log.info("admin.forbidden", extra={"path": request.path, "role": role})
            return pages.refusal(
                403,
                "Admins only",
                f"You are signed in as {email}, which is not an admin account. Only admins can "
                "see settings and the admin API. Sign out and sign in with an admin account, "
                "or ask an admin to run `exsync admin add-user` for you.",
            )
        g.admin = f"user:{email}"
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
    conn = current_app.extensions["exsync"].redis
    email = request.form.get("email", "").strip().lower()
    password = request.form.get("password", "")
    failures = int(conn.get(_failures_key(email)) or 0)
    if failures >= MAX_FAILURES:
        log.info("admin.signin_refused", extra={"reason": "too many failures"})
        error = "Too many failed sign-ins for this account. Wait 15 minutes and try again."
        return render_template(
            "admin/sign_in.html", next=next_url, why="", error=error, email=email
        ), 429
    if not admin_accounts.check_password(conn, email, password):
        pipe = conn.pipeline()
        pipe.incr(_failures_key(email))
        pipe.expire(_failures_key(email), FAILURE_WINDOW)
        pipe.execute()
        log.info("admin.signin_failed", extra={"reason": "wrong email or password"})
        return render_template(
            "admin/sign_in.html",
            next=next_url,
            why="",
            error="Wrong email or password.",
            email=email,
        ), 401
    conn.delete(_failures_key(email))
    # A fresh id on every sign-in: a session id planted before sign-in is worth nothing.
    session.clear()
    sid = secrets.token_urlsafe(32)
    conn.set(_session_key(sid), email, ex=SESSION_SECONDS)
    session["sid"] = sid
    session.permanent = True
    log.info("admin.signed_in", extra={"account": email})
    return redirect(next_url, code=303)


@bp.post("/admin/sign-out")
def sign_out() -> BaseResponse:
    sid = session.get("sid")
    if isinstance(sid, str):
        current_app.extensions["exsync"].redis.delete(_session_key(sid))
    session.clear()
    return redirect(url_for("admin_auth.sign_in", why="signed-out-now"), code=303)
