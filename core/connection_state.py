"""Whether anything syncs now, and why not, in the one rule every screen reads: the User
Accounts tab and its tiles, the Configuration tab, the admin API and `exsync status`.

Workers write only while the stored connection is absent or `not_configured` (an environment-only
setup: the app registration in the EXSYNC_* settings, as the demo runs) or `connected`
(core.connection.WRITING); while it is `configured`, `reauthorize` or
`disconnecting` they write nothing. Here that becomes what an admin reads:

    connected        the admin's connection, authorized                        syncs
    environment      no configuration saved; the EXSYNC_* app registration     syncs
    not_configured   neither (or only part of the EXSYNC_* registration)       nothing syncs
    not_connected    saved, never authorized (or changed since): Authorize     nothing syncs
    disconnected     saved, was connected, then the admin disconnected         nothing syncs
    disconnecting    our subscriptions (and items, if asked) are being removed  nothing syncs
    reauthorize      Microsoft refused the service account's sign-in           nothing syncs

Reading needs only Redis and the settings, so the web app and the CLI share it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import redis

from core import connection
from core.connection import Connection, Status
from core.settings import ENV_PREFIX, REGISTRATION, Settings


class Link(StrEnum):
    CONNECTED = "connected"
    ENVIRONMENT = "environment"
    NOT_CONFIGURED = "not_configured"
    NOT_CONNECTED = "not_connected"
    DISCONNECTED = "disconnected"
    DISCONNECTING = "disconnecting"
    REAUTHORIZE = "reauthorize"


SYNCING = frozenset({Link.CONNECTED, Link.ENVIRONMENT})


@dataclass(frozen=True)
class ConnectionState:
    link: Link
    headline: str  # a few words: "Connected as sync@bank.example", "Disconnected"
    detail: str  # what it means and what to do, in plain words
    polling: bool  # delegated access (mailboxes polled) instead of subscriptions
    stored: Connection

    @property
    def syncing(self) -> bool:
        return self.link in SYNCING

    @property
    def access(self) -> str:
        return "polling" if self.polling else "subscriptions"


def current(conn: redis.Redis, settings: Settings) -> ConnectionState:
    """The connection as workers act on it now (see the module's table)."""
    stored = connection.load(conn)
    saved = stored.status != Status.NOT_CONFIGURED
    polling = not (stored.impersonation if saved else settings.impersonation)
    link, headline, detail = _describe(stored, settings)
    return ConnectionState(link, headline, detail, polling, stored)


def _describe(stored: Connection, settings: Settings) -> tuple[Link, str, str]:
    account = stored.service_account or "the service account"
    match stored.status:
        case Status.CONNECTED:
            return Link.CONNECTED, f"Connected as {stored.connected_account}", "Syncing."
        case Status.REAUTHORIZE:
            return (
                Link.REAUTHORIZE,
                "Re-authorize needed",
                "Microsoft no longer accepts the service account's sign-in, so nothing syncs. "
                f"Click Authorize on the Configuration tab and sign in as {account}.",
            )
        case Status.DISCONNECTING:
            return (
                Link.DISCONNECTING,
                "Disconnecting",
                "Our subscriptions are being removed; nothing syncs. The configuration stays.",
            )
        case Status.CONFIGURED if stored.connected_at:
            return (
                Link.DISCONNECTED,
                "Disconnected",
                "Nothing syncs. The configuration is kept: click Authorize on the "
                f"Configuration tab and sign in as {account} to connect again.",
            )
        case Status.CONFIGURED:
            return (
                Link.NOT_CONNECTED,
                "Not connected yet",
                "The configuration is saved but nothing syncs until it is authorized: click "
                f"Authorize on the Configuration tab and sign in as {account}.",
            )
    missing = settings.missing(*REGISTRATION)
    if not missing:
        return (
            Link.ENVIRONMENT,
            "Connected through the environment settings",
            f"Syncing as the app {settings.client_id} in tenant {settings.tenant_id} at "
            f"{settings.graph_url} ({', '.join(ENV_PREFIX + n.upper() for n in REGISTRATION)}). "
            "A configuration saved and authorized on the Configuration tab takes its place.",
        )
    if len(missing) < len(REGISTRATION):
        why = f"{', '.join(missing)} not set, so the environment's app registration is unusable"
    else:
        why = "nothing is set up"
    return (
        Link.NOT_CONFIGURED,
        "Not configured",
        f"Nothing syncs: {why}. Fill in the Configuration tab, save, then click Authorize.",
    )
