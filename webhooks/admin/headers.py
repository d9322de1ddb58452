"""The security headers on every answer under /admin: pages, the admin API, redirects, refusals.

    Content-Security-Policy   only this site's own files (no inline script or style: the pages
                              use webhooks/static), no plugins, no <base>, no framing; forms
                              post here, or are redirected to a sign-in authority (Authorize)
    X-Content-Type-Options    nosniff
    Referrer-Policy           same-origin: no other site learns an admin address; not
                              no-referrer, since over https CSRFProtect refuses a form post
                              that comes without this site's own Referer
    Cache-Control             no-store: the pages show tokens and account details

The static files they load are outside /admin and keep their own caching.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import Flask, Response, request

from core.connection import CLOUDS
from core.settings import Settings
from webhooks.admin.forms import resolve_cloud


def init_app(app: Flask) -> None:
    headers = admin_headers(app.extensions["exsync"].settings)

    def add_headers(response: Response) -> Response:
        if request.path == "/admin" or request.path.startswith("/admin/"):
            response.headers.update(headers)
        return response

    app.after_request(add_headers)


def admin_headers(settings: Settings) -> dict[str, str]:
    # Chromium checks form-action on the redirects after a form post too: Authorize's post is
    # answered with a redirect to the cloud's sign-in authority.
    form_targets = " ".join(["'self'", *sign_in_origins(settings)])
    policy = (
        "default-src 'self'; object-src 'none'; base-uri 'none'; "
        f"form-action {form_targets}; frame-ancestors 'none'"
    )
    return {
        "Content-Security-Policy": policy,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "same-origin",
        "Cache-Control": "no-store",
    }


def sign_in_origins(settings: Settings) -> list[str]:
    """Every authority a connection can sign in at: each cloud's (the emulator's when
    overridden) and an environment-only setup's."""
    authorities = [resolve_cloud(name, settings).authority for name in CLOUDS]
    origins = {_origin(url) for url in [*authorities, settings.authority]}
    return sorted(origins)


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"
