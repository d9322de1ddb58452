"""Builds the msgraph-sdk client the service uses, for Microsoft's clouds or the local emulator.

The same construction serves production and tests: only the authority, the Graph base URL and
the CA bundle differ. Traps this avoids (research/graph.md §9): the SDK derives the token scope
from the request host unless scopes are given; kiota sends no token to a host outside
`allowed_hosts`; azure-identity refuses an http authority and, without
`disable_instance_discovery`, asks Microsoft's cloud about an unknown authority host.
"""

from __future__ import annotations

import ssl
from urllib.parse import urlsplit

import httpx
from azure.core.credentials import TokenCredential
from kiota_authentication_azure.azure_identity_authentication_provider import (
    AzureIdentityAuthenticationProvider,
)
from kiota_http.middleware.options import RetryHandlerOption
from msgraph import GraphServiceClient
from msgraph.graph_request_adapter import GraphRequestAdapter
from msgraph_core import GraphClientFactory

from core.microsoft import msgraph_speedup
from core.microsoft.endpoints import GraphEndpoint


def graph_client(endpoint: GraphEndpoint, credential: TokenCredential) -> GraphServiceClient:
    """A client bound to the running event loop: keep one per loop, it cannot outlive it."""
    msgraph_speedup.install()  # reading an event cost 60 ms of CPU before
    auth = AzureIdentityAuthenticationProvider(
        credential,
        scopes=[endpoint.token_scope],
        allowed_hosts=[urlsplit(endpoint.graph_url).hostname or ""],
    )
    # Retries are core.microsoft.throttle's: the SDK's handler waits alone, unshared by workers.
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
