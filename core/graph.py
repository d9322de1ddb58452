"""Builds the msgraph-sdk client the service uses, for Microsoft's clouds or the local emulator.

The same construction serves production and tests: only the authority, the Graph base URL and
the CA bundle differ. Traps this avoids (research/graph.md §9): the SDK derives the token scope
from the request host unless scopes are given; kiota sends no token to a host outside
`allowed_hosts`; azure-identity refuses an http authority and, without
`disable_instance_discovery`, asks Microsoft's cloud about an unknown authority host.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
from azure.core.credentials import TokenCredential
from azure.identity import ClientSecretCredential
from kiota_authentication_azure.azure_identity_authentication_provider import (
    AzureIdentityAuthenticationProvider,
)
from kiota_http.middleware.options import RetryHandlerOption
from msgraph import GraphServiceClient
from msgraph.graph_request_adapter import GraphRequestAdapter
from msgraph_core import GraphClientFactory

from core import msgraph_speedup

MICROSOFT_AUTHORITY = "https://login.microsoftonline.com"
MICROSOFT_GRAPH = "https://graph.microsoft.com/v1.0"


@dataclass(frozen=True)
class GraphEndpoint:
    """Where Graph and its token authority live, and which CA to trust for them."""

    graph_url: str = MICROSOFT_GRAPH
    authority: str = MICROSOFT_AUTHORITY
    ca_file: str | None = None

    @property
    def scope(self) -> str:
        """The `.default` scope of the Graph resource (national clouds have their own host)."""
        parts = urlsplit(self.graph_url)
        return f"{parts.scheme}://{parts.hostname}/.default"

    @property
    def is_microsoft(self) -> bool:
        return urlsplit(self.authority).hostname in _MICROSOFT_AUTHORITY_HOSTS

    @property
    def token_scope(self) -> str:
        """The scope tokens are asked for: Graph's resource (graph.microsoft.com) whatever host
        serves it: the emulator answers for it, and national clouds pass their own graph_url."""
        return self.scope if self.is_microsoft else "https://graph.microsoft.com/.default"


_MICROSOFT_AUTHORITY_HOSTS = {
    "login.microsoftonline.com",
    "login.microsoftonline.us",
    "login.partner.microsoftonline.cn",
}


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
    return ClientSecretCredential(
        tenant_id,
        client_id,
        client_secret,
        authority=endpoint.authority,
        connection_verify=endpoint.ca_file or True,
        disable_instance_discovery=not endpoint.is_microsoft,
        **transport,
    )


def graph_client(endpoint: GraphEndpoint, credential: TokenCredential) -> GraphServiceClient:
    """A client bound to the running event loop: keep one per loop, it cannot outlive it."""
    msgraph_speedup.install()  # reading an event cost 60 ms of CPU before
    auth = AzureIdentityAuthenticationProvider(
        credential,
        scopes=[endpoint.token_scope],
        allowed_hosts=[urlsplit(endpoint.graph_url).hostname or ""],
    )
    # Retries are core.throttle's: the SDK's handler waits alone, not shared by the workers.
    no_retry = RetryHandlerOption(max_retries=0)
    http = GraphClientFactory.create_with_default_middleware(
        options={no_retry.get_key(): no_retry},
        client=httpx.AsyncClient(
            verify=tls_context(endpoint.ca_file),
            timeout=httpx.Timeout(30, connect=10),
            http2=False,
        ),
    )
    adapter = GraphRequestAdapter(auth, client=http)
    adapter.base_url = endpoint.graph_url
    return GraphServiceClient(request_adapter=adapter)


def tls_context(ca_file: str | None) -> ssl.SSLContext:
    """The system trust store, or only the given CA (the emulator's) when one is named."""
    if ca_file:
        return ssl.create_default_context(cafile=ca_file)
    return ssl.create_default_context()
