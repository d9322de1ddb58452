"""MSAL for the service account: the confidential client both the admin's Authorize button and
the workers' delegated token use, against the configured tenant and cloud.

Delegated mode reads and writes the calendars shared with the service account
(Calendars.ReadWrite.Shared); User.Read names the account. In impersonation mode the sign-in
only proves who the service account is.
"""

from __future__ import annotations

import functools

import msal
import requests

from core.connection import Connection

HTTP_TIMEOUT = 15
MICROSOFT_GRAPH_RESOURCE = "https://graph.microsoft.com/"
DELEGATED_SCOPES = ["Calendars.ReadWrite.Shared", "User.Read"]
APP_ONLY_SCOPES = ["User.Read"]


def scopes(config: Connection, *, delegated: bool | None = None) -> list[str]:
    """The scopes to ask for: the cloud's Graph resource (the emulator answers for
    graph.microsoft.com's, as core.microsoft.graph assumes) with the access mode's permissions."""
    endpoint = config.endpoint()
    resource = (
        endpoint.scope.removesuffix(".default")
        if endpoint.is_microsoft
        else MICROSOFT_GRAPH_RESOURCE
    )
    wants_delegated = (not config.impersonation) if delegated is None else delegated
    names = DELEGATED_SCOPES if wants_delegated else APP_ONLY_SCOPES
    return [resource + name for name in names]


def confidential_app(
    config: Connection, client_secret: str, ca_file: str | None
) -> msal.ConfidentialClientApplication:
    """MSAL against the tenant; raises ValueError for an unknown tenant, OSError unreachable."""
    return msal.ConfidentialClientApplication(
        config.client_id,
        client_credential=client_secret,
        authority=config.tenant_authority,
        instance_discovery=config.endpoint(ca_file).is_microsoft,
        http_client=http_session(ca_file),
    )


def http_session(ca_file: str | None) -> requests.Session:
    """MSAL's HTTP session, trusting only the given CA when one is named.

    requests lets REQUESTS_CA_BUNDLE (set on many hosts) override a session's `verify`, so the
    CA and the timeout are bound to every request rather than set on the session."""
    session = requests.Session()
    session.mount("https://", requests.adapters.HTTPAdapter(max_retries=1))
    session.request = functools.partial(  # type: ignore[method-assign]
        session.request, verify=ca_file or True, timeout=HTTP_TIMEOUT
    )
    return session
