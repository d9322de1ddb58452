"""What a gateway does around every call under `/api/v2/b2b`, in the order a real one does it.

Before: an armed `api_error` fault → bearer token → the client's rate limit (headers on every
answer) → the scope the call needs → an armed `slow_page` on collection GETs. After: an armed
`slow_write` delays a successful write's answer, and every request is counted by route and
status. The token endpoint is exempt from the checks. Registered on the app, not a blueprint,
so that unknown paths under the API are refused (and counted) the same way.
"""

from __future__ import annotations

import time

from flask import Response, g, request

from emulators.coconut.jsonapi import ApiError
from emulators.coconut.store.access import Token
from emulators.coconut.wire import API, store

TOKEN_PATH = f"{API}/oauth/token"
# Endpoints of the paged collections (blueprint.view), where `slow_page` applies.
COLLECTIONS = {
    "directory.users", "directory.assignments", "directory.locations_list",
    "directory.services_list", "appointments.appointments", "absences.absences",
    "webhooks.webhooks",
}  # fmt: skip
SCOPE_FOR = {
    ("users", "GET"): "users:read",
    ("users", "PATCH"): "users:write",
    ("assignments", "GET"): "users:read",
    ("locations", "GET"): "appointments:read",
    ("services", "GET"): "appointments:read",
    ("clients", "GET"): "appointments:read",
    ("appointments", "GET"): "appointments:read",
    ("appointments", "POST"): "appointments:write",
    ("appointments", "PATCH"): "appointments:write",
    ("appointments", "DELETE"): "appointments:write",
    ("absences", "GET"): "absences:read",
    ("absences", "POST"): "absences:write",
    ("absences", "PATCH"): "absences:write",
    ("absences", "DELETE"): "absences:write",
}


def check() -> Response | None:
    """Auth, rate limit and injected API errors, in the order a real gateway applies them."""
    g.started = time.monotonic()
    path = request.path
    if not path.startswith(API + "/") or path == TOKEN_PATH:
        return None
    injected_error()
    caller = authenticated()
    take_rate(caller)
    needed = scope_needed(path, request.method)
    if needed is not None and needed not in caller.scopes:
        raise ApiError(403, "insufficient_scope", "Forbidden", f"this call needs scope {needed}")
    if request.method == "GET" and request.endpoint in COLLECTIONS:
        slow = store().faults.fire("slow_page")
        if slow is not None:
            time.sleep(slow["seconds"])  # before any lock: other calls go on meanwhile
    return None


def injected_error() -> None:
    fault = store().faults.fire("api_error")
    if fault is None:
        return
    headers = {}
    if fault["status"] in (429, 503):
        headers["Retry-After"] = str(fault["retry_after"])
    raise ApiError(
        fault["status"],
        "injected_fault",
        "Service unavailable" if fault["status"] != 429 else "Too many requests",
        "injected by the emulator's api_error fault",
        headers=headers,
    )


def authenticated() -> Token:
    token = bearer_token()
    found = store().tokens.authenticate(token) if token else None
    if found is None:
        detail = "missing bearer token" if not token else "token is invalid or expired"
        raise ApiError(
            401,
            "unauthenticated",
            "Unauthenticated",
            detail,
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )
    return found


def take_rate(caller: Token) -> None:
    """Count the call in the client's window; the limit headers go on every answer."""
    allowed, remaining, retry_after = store().rate.take(caller.client_id)
    limit = str(store().settings.rate_limit)
    g.rate_headers = {"X-RateLimit-Limit": limit, "X-RateLimit-Remaining": str(remaining)}
    if not allowed:
        raise ApiError(
            429,
            "rate_limited",
            "Too many requests",
            f"more than {limit} requests in 60 seconds",
            headers={**g.rate_headers, "Retry-After": str(retry_after)},
        )


def count(response: Response) -> Response:
    for name, value in getattr(g, "rate_headers", {}).items():
        response.headers.setdefault(name, value)
    writes = request.method in ("POST", "PATCH", "DELETE")
    if writes and request.path.startswith(API + "/") and response.status_code < 300:
        slow = store().faults.fire("slow_write")
        if slow is not None:
            time.sleep(slow["seconds"])  # done already; the answer is what is late
    rule = request.url_rule.rule if request.url_rule else "unmatched"
    with store().lock:
        store().requests.count(f"{request.method} {rule}", response.status_code)
    return response


def bearer_token() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def scope_needed(path: str, method: str) -> str | None:
    """`/webhooks…` needs webhooks:manage; the rest by collection and method."""
    first = path[len(API) + 1 :].split("/", 1)[0]
    if first == "webhooks":
        return "webhooks:manage"
    return SCOPE_FOR.get((first, method))
