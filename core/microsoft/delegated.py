"""The service account's delegated Graph token, shared by every worker, refreshed by one at a time.

When impersonation is off, workers act as the service account on the calendars shared with it.
Microsoft rotates the refresh token on every redemption, so two workers redeeming the same one
at once would leave one of them with a dead token: the access token is cached in Redis
(encrypted), and only the holder of a Redis lock redeems. A refresh token Microsoft refuses
(`invalid_grant`: revoked, expired, password changed) turns the connection to "re-authorize
needed", which every admin page shows, instead of failing job after job in silence.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import redis
from azure.core.credentials import AccessToken
from azure.core.exceptions import ClientAuthenticationError

from core import connection, logs, store
from core.microsoft import entra
from core.secrets import SecretBox

log = logging.getLogger(__name__)

CACHE_KEY = connection.DELEGATED_TOKEN_KEY
LOCK_KEY = store.delegated_lock_key()
MARGIN_SECONDS = 300  # refresh this long before expiry, as azure-identity does


class ReauthorizeNeeded(ClientAuthenticationError):
    """Microsoft refused the refresh token; an admin must Authorize again."""


class DelegatedCredential:
    """An azure-core TokenCredential over the stored refresh token (msgraph-sdk calls get_token)."""

    def __init__(self, conn: redis.Redis, box: SecretBox, ca_file: str | None) -> None:
        self.conn = conn
        self.box = box
        self.ca_file = ca_file

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        cached = self._cached()
        if cached is not None:
            return cached
        lock = self.conn.lock(LOCK_KEY, timeout=60, blocking_timeout=90)
        if not lock.acquire():
            raise ClientAuthenticationError("another worker is refreshing the delegated token")
        try:
            return self._cached() or self._redeem()
        finally:
            lock.release()

    def _cached(self) -> AccessToken | None:
        raw = self.conn.get(CACHE_KEY)
        if raw is None:
            return None
        token = json.loads(self.box.decrypt(raw))
        logs.redact_rotating(token["token"])  # the box learnt the record, not the token alone
        if token["expires_on"] - MARGIN_SECONDS <= time.time():
            return None
        return AccessToken(token["token"], int(token["expires_on"]))

    def _redeem(self) -> AccessToken:
        config = connection.load(self.conn)
        refresh = connection.refresh_token(self.conn, self.box)
        if not refresh:
            raise ReauthorizeNeeded("the service account has not authorized, or must again")
        app = entra.confidential_app(
            config, connection.client_secret(self.conn, self.box), self.ca_file
        )
        result = app.acquire_token_by_refresh_token(refresh, entra.scopes(config, delegated=True))
        logs.redact_rotating(result.get("access_token"), result.get("refresh_token"))
        if "access_token" not in result:
            error = str(result.get("error", "unknown"))
            if error in ("invalid_grant", "interaction_required"):
                connection.mark_reauthorize(self.conn)
                log.warning("delegated.reauthorize_needed", extra={"error": error})
                raise ReauthorizeNeeded(f"Microsoft refused the refresh token ({error})")
            raise ClientAuthenticationError(f"token refresh failed ({error})")
        expires_on = int(time.time()) + int(result.get("expires_in", 3600))
        if result.get("refresh_token"):
            connection.store_refresh_token(self.conn, self.box, str(result["refresh_token"]))
        body = json.dumps({"token": result["access_token"], "expires_on": expires_on})
        self.conn.set(CACHE_KEY, self.box.encrypt(body), ex=max(60, expires_on - int(time.time())))
        log.info("delegated.refreshed", extra={"expires_in": result.get("expires_in")})
        return AccessToken(str(result["access_token"]), expires_on)
