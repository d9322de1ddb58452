"""Which Graph credential the service acts with now, and whether it yields a token.

The one rule workers (workers.context), `/readyz` and the CLI follow: the admin's connection
once Authorize succeeded (app-only with the stored client secret, or the service account's
delegated token), else the app registration in the EXSYNC_TENANT_ID / EXSYNC_CLIENT_ID /
EXSYNC_CLIENT_SECRET settings.
Workers build their Graph client from `current()`, so "ready" means what a worker would find.

    NotConfigured    neither an authorized connection nor any of the three settings
    Misconfigured    a credential that cannot even be built (a partial app registration,
                     a malformed tenant id); `source` says whose
    token_problem()  None when a token was had, else a plain reason (never a secret)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis
from azure.core.credentials import AccessToken, TokenCredential
from azure.core.exceptions import ClientAuthenticationError, ServiceRequestError
from azure.identity import ClientSecretCredential

from core import connection, logs
from core.microsoft.aadsts import explain
from core.microsoft.delegated import DelegatedCredential, ReauthorizeNeeded
from core.microsoft.endpoints import GraphEndpoint
from core.secrets import SecretBox
from core.settings import REGISTRATION, Settings

# A probe must answer well within a load balancer's timeout; azure-core waits minutes.
PROBE_TRANSPORT = {"connection_timeout": 5, "read_timeout": 10, "retry_total": 0}


class NotConfigured(Exception):
    """No Graph credential is configured at all (a web-only setup)."""


class Misconfigured(ValueError):
    def __init__(self, source: str, problem: str) -> None:
        super().__init__(problem)
        self.source = source


@dataclass(frozen=True)
class GraphAccess:
    source: str  # "connection" (the admin's, authorized) or "environment"
    endpoint: GraphEndpoint
    credential: TokenCredential
    secret: str  # the client secret in use, kept only to scrub it from messages


def current(settings: Settings, conn: redis.Redis, **transport: Any) -> GraphAccess:
    """The credential a worker would use now; raises NotConfigured or Misconfigured."""
    stored = connection.load(conn)
    if stored.status in connection.AUTHORIZED and settings.secret_key:
        box = SecretBox(settings.secret_key)
        endpoint = stored.endpoint(settings.graph_ca_file)
        if not stored.impersonation:
            delegated = DelegatedCredential(conn, box, settings.graph_ca_file)
            return GraphAccess("connection", endpoint, delegated, "")
        secret = connection.client_secret(conn, box)
        tenant, client = stored.tenant_id, stored.client_id
        return _app("connection", endpoint, tenant, client, secret, transport)
    missing = settings.missing(*REGISTRATION)
    if len(missing) == len(REGISTRATION):
        raise NotConfigured("no authorized connection and no app registration in the settings")
    if missing:
        raise Misconfigured("environment", f"{', '.join(missing)} not set")
    tenant, client, secret = settings.tenant_id, settings.client_id, settings.client_secret
    return _app("environment", settings.graph_endpoint, tenant, client, secret, transport)


def _app(
    source: str, endpoint: GraphEndpoint, tenant: str, client: str, secret: str,
    transport: dict[str, Any],
) -> GraphAccess:  # fmt: skip
    try:
        credential = app_credential(endpoint, tenant, client, secret, **transport)
    except ValueError as exc:  # azure-identity checks the tenant id and the secret up front
        raise Misconfigured(source, _scrub(str(exc), secret)) from None
    return GraphAccess(source, endpoint, credential, secret)


def app_credential(
    endpoint: GraphEndpoint,
    tenant_id: str,
    client_id: str,
    client_secret: str,
    **transport: Any,
) -> ClientSecretCredential:
    """An app-only (client credentials) credential against the endpoint's authority.

    `transport` goes to azure-core (`connection_timeout`, `read_timeout`, `retry_total`): its
    defaults wait minutes, which suits a worker but not a readiness probe."""
    return _RedactingCredential(
        tenant_id,
        client_id,
        client_secret,
        authority=endpoint.authority,
        connection_verify=endpoint.ca_file or True,
        disable_instance_discovery=not endpoint.is_microsoft,
        **transport,
    )


class _RedactingCredential(ClientSecretCredential):
    """Each token it hands out joins the log redaction (core.logs), as the delegated ones do."""

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        token = super().get_token(*scopes, **kwargs)
        logs.redact_rotating(token.token)
        return token


def token_problem(access: GraphAccess) -> str | None:
    """Ask for a token; None when one was had, else why not in plain words."""
    try:
        access.credential.get_token(access.endpoint.token_scope)
    except ReauthorizeNeeded:
        return "the service account must authorize again (Microsoft refused its refresh token)"
    except ClientAuthenticationError as exc:
        return _scrub(plain_refusal(str(exc.message or exc)), access.secret)
    except ServiceRequestError as exc:
        return _scrub(
            f"cannot reach the sign-in authority {access.endpoint.authority} "
            f"({type(exc).__name__})",
            access.secret,
        )
    return None


def plain_refusal(message: str) -> str:
    """An azure-identity or MSAL refusal in plain words, with Microsoft's AADSTS code."""
    explained = explain("", message)
    if not explained.code.startswith("AADSTS"):
        return f"the sign-in was refused: {message.strip()[:200]}"
    return f"{explained.problem.rstrip('.')} ({explained.code})"


def _scrub(text: str, secret: str) -> str:
    """Defence in depth: no message of ours carries the secret, whatever a library put in it."""
    return text.replace(secret, "***") if secret else text
