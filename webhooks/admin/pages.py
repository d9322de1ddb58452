"""What every admin page shares: HTML or JSON by what the client asks for, and the layout's
connection banner (a dead refresh token shows as "re-authorize needed" on every page)."""

from __future__ import annotations

from flask import Response, current_app, jsonify, render_template, request

from core import connection


def wants_html() -> bool:
    """Browsers get pages; scripts (no Accept, or JSON first) get JSON."""
    best = request.accept_mimetypes.best_match(["application/json", "text/html"])
    return best == "text/html" and "Authorization" not in request.headers


def render(template: str, status: int = 200, **context: object) -> tuple[str, int]:
    services = current_app.extensions["exsync"]
    status_now = connection.load(services.redis).status
    return render_template(template, connection_status=status_now, **context), status


def refusal(status: int, title: str, reason: str) -> tuple[Response | str, int]:
    """A 4xx/5xx that says why, as a page or as `{"error", "reason"}`."""
    if wants_html():
        page = render_template("admin/refused.html", title=title, reason=reason, status=status)
        return page, status
    return jsonify(error=title, reason=reason), status
