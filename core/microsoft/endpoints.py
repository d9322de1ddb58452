"""Where Microsoft Graph and its sign-in authority live, in each cloud or the local emulator.

Plain data and no SDK import: the settings, the stored connection and the web app read these,
and only the workers (core.microsoft.graph) build a client from them.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

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
