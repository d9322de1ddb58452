"""Who may call and how often: OAuth2 client-credential tokens, rate windows, request counts.

All three share the store's lock. Lifetimes and limits are read from `Settings` at each call, so
`PATCH /_emulator/settings` takes effect at once.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from emulators.coconut.jsonapi import ApiError
from emulators.coconut.store.records import Settings

SCOPES = (
    "users:read",
    "users:write",
    "appointments:read",
    "appointments:write",
    "absences:read",
    "absences:write",
    "webhooks:manage",
)


@dataclass
class Token:
    client_id: str
    scopes: frozenset[str]
    expires_at: float


class Tokens:
    """The one client's credentials and every access token issued to it."""

    def __init__(
        self, lock: threading.RLock, client_id: str, client_secret: str, settings: Settings
    ) -> None:
        self.lock = lock
        self.client_id = client_id
        self.client_secret = client_secret
        self.settings = settings
        self.issued: dict[str, Token] = {}

    def issue(self, client_id: str, client_secret: str, scope: str | None) -> dict[str, Any]:
        """OAuth2 client credentials; raises ApiError carrying an OAuth error body."""
        good_id = hmac.compare_digest(client_id.encode(), self.client_id.encode())
        good_secret = hmac.compare_digest(client_secret.encode(), self.client_secret.encode())
        if not (good_id and good_secret):
            raise ApiError(401, "invalid_client", "invalid_client", "unknown client or bad secret")
        requested = set(scope.split()) if scope else set(SCOPES)
        unknown = sorted(requested - set(SCOPES))
        if unknown:
            raise ApiError(400, "invalid_scope", "invalid_scope", f"unknown scopes {unknown}")
        with self.lock:
            token = secrets.token_urlsafe(32)
            lifetime = self.settings.token_lifetime
            self.issued[token] = Token(client_id, frozenset(requested), time.time() + lifetime)
            return {
                "token_type": "Bearer",
                "expires_in": lifetime,
                "access_token": token,
                "scope": " ".join(sorted(requested)),
            }

    def authenticate(self, token: str) -> Token | None:
        with self.lock:
            found = self.issued.get(token)
            if found is None or found.expires_at <= time.time():
                return None
            return found

    def expire(self) -> int:
        """Every issued token goes stale now; how many there are."""
        with self.lock:
            now = time.time()
            for token in self.issued.values():
                token.expires_at = min(token.expires_at, now)
            return len(self.issued)

    def describe(self) -> dict[str, int]:
        with self.lock:
            return {
                "issued": len(self.issued),
                "valid": sum(t.expires_at > time.time() for t in self.issued.values()),
            }


class RateLimit:
    """A sliding 60-second window of requests per client."""

    def __init__(self, lock: threading.RLock, settings: Settings) -> None:
        self.lock = lock
        self.settings = settings
        self.windows: dict[str, deque[float]] = {}

    def take(self, client_id: str) -> tuple[bool, int, int]:
        """Count one request in the client's 60 s window: (allowed, remaining, retry_after)."""
        with self.lock:
            now = time.monotonic()
            window = self.windows.setdefault(client_id, deque())
            while window and window[0] <= now - 60:
                window.popleft()
            limit = self.settings.rate_limit
            if len(window) >= limit:
                return False, 0, max(1, int(window[0] + 60 - now + 0.999))
            window.append(now)
            return True, limit - len(window), 0


@dataclass
class Counters:
    total: int = 0
    by_route: dict[str, int] = field(default_factory=dict)
    by_status: dict[str, int] = field(default_factory=dict)

    def count(self, route: str, status: int) -> None:
        self.total += 1
        self.by_route[route] = self.by_route.get(route, 0) + 1
        self.by_status[str(status)] = self.by_status.get(str(status), 0) + 1

    def as_json(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "by_route": dict(self.by_route),
            "by_status": dict(self.by_status),
        }
