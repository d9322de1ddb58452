"""The Exchange connection the admin configured on the settings page, as workers read it.

One Redis hash, `exsync:connection`, holds the Configuration tab's fields, where Graph and its
sign-in authority live (filled from the cloud and confirmed by the admin, so workers never
guess), and the connection's state. The client secret and the service account's refresh token
are stored encrypted (core.secrets) and are only decrypted by `client_secret()` and
`refresh_token()`, never put on the dataclass that pages render.

States: `not_configured` → `configured` (saved, not yet authorized) → `connected` (the service
account signed in) → `reauthorize` (its refresh token died; every page says so); Disconnect
goes `connected` → `disconnecting` → `configured`.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, fields
from enum import StrEnum

import redis

from core import reconcile, store
from core.microsoft.endpoints import MICROSOFT_AUTHORITY, MICROSOFT_GRAPH, GraphEndpoint
from core.secrets import SecretBox

CONNECTION_KEY = store.connection_key()
# The service account's cached access token (core.microsoft.delegated); dropped whenever who
# signs in or where changes, so no worker keeps acting as the previous account.
DELEGATED_TOKEN_KEY = store.delegated_token_key()
# Days before today kept in sync: EXSYNC_SYNC_PAST_DAYS's default and the form's "Days back".
SYNC_PAST_DAYS = 7


class Status(StrEnum):
    NOT_CONFIGURED = "not_configured"
    CONFIGURED = "configured"
    CONNECTED = "connected"
    REAUTHORIZE = "reauthorize"
    DISCONNECTING = "disconnecting"  # removing our subscriptions (and items, if asked)


# The statuses under which the admin's authorized credential is the one in use
# (core.microsoft.graph_access); otherwise the environment's app registration is.
AUTHORIZED = frozenset({Status.CONNECTED, Status.REAUTHORIZE, Status.DISCONNECTING})
# The statuses under which workers write anywhere: an environment-only setup is
# `not_configured` and syncs; a saved connection syncs only once connected.
WRITING = frozenset({Status.NOT_CONFIGURED, Status.CONNECTED})


def writing(conn: redis.Redis) -> bool:
    """Whether jobs should write anywhere now (no stored connection counts as not configured)."""
    status = conn.hget(CONNECTION_KEY, "status")
    return status is None or status.decode() in WRITING


class EditPolicy(StrEnum):
    """What a sync does with a staff member's edit to a projected appointment in Outlook."""

    RESTORE = "restore"  # put it back as Coconut has it, and warn (DESIGN.md, the default)
    KEEP = "keep"  # leave the edit until the appointment changes in Coconut, and warn


@dataclass(frozen=True)
class Cloud:
    label: str
    graph_url: str
    authority: str


CLOUDS: dict[str, Cloud] = {
    "worldwide": Cloud("Worldwide (and GCC)", MICROSOFT_GRAPH, MICROSOFT_AUTHORITY),
    "usgov": Cloud(
        "US Government (GCC High)",
        "https://graph.microsoft.us/v1.0",
        "https://login.microsoftonline.us",
    ),
    "usgovdod": Cloud(
        "US Government DoD",
        "https://dod-graph.microsoft.us/v1.0",
        "https://login.microsoftonline.us",
    ),
    "china": Cloud(
        "China (operated by 21Vianet)",
        "https://microsoftgraph.chinacloudapi.cn/v1.0",
        "https://login.chinacloudapi.cn",
    ),
}


@dataclass(frozen=True)
class Connection:
    """The non-secret part of the configuration; safe to render and to log."""

    tenant_id: str = ""
    cloud: str = "worldwide"
    graph_url: str = MICROSOFT_GRAPH
    authority: str = MICROSOFT_AUTHORITY
    display_name: str = "Microsoft Exchange"
    client_id: str = ""
    impersonation: bool = True
    show_event_titles: bool = False
    service_account: str = ""
    sync_past_days: int = SYNC_PAST_DAYS
    sync_future_days: int = 180
    edit_policy: EditPolicy = EditPolicy.RESTORE
    status: Status = Status.NOT_CONFIGURED
    has_client_secret: bool = False
    connected_account: str = ""
    connected_at: int = 0

    def endpoint(self, ca_file: str | None = None) -> GraphEndpoint:
        return GraphEndpoint(graph_url=self.graph_url, authority=self.authority, ca_file=ca_file)

    @property
    def tenant_authority(self) -> str:
        """The sign-in authority for this tenant, as MSAL and azure-identity take it."""
        return f"{self.authority}/{self.tenant_id}"


_BOOLS = {f.name for f in fields(Connection) if f.type == "bool"}
_INTS = {f.name for f in fields(Connection) if f.type == "int"}


def load(conn: redis.Redis) -> Connection:
    """The stored connection, or the defaults (not configured) when nothing is stored."""
    raw = {k.decode(): v.decode() for k, v in conn.hgetall(CONNECTION_KEY).items()}
    values: dict[str, object] = {}
    for field in fields(Connection):
        if field.name == "has_client_secret":
            values[field.name] = bool(raw.get("client_secret"))
        elif field.name not in raw:
            continue
        elif field.name in _BOOLS:
            values[field.name] = raw[field.name] == "1"
        elif field.name in _INTS:
            values[field.name] = int(raw[field.name])
        elif field.name == "status":
            values[field.name] = Status(raw[field.name])
        elif field.name == "edit_policy":
            values[field.name] = EditPolicy(raw[field.name])
        else:
            values[field.name] = raw[field.name]
    return Connection(**values)  # type: ignore[arg-type]


def save_configuration(
    conn: redis.Redis, box: SecretBox, config: Connection, client_secret: str | None
) -> Connection:
    """Store the Configuration tab. A blank secret keeps the stored one (it is never shown
    back, so the form cannot round-trip it). Changing who or where we sign in to drops the old
    authorization: the admin must authorize again."""
    previous = load(conn)
    identity = ("tenant_id", "cloud", "graph_url", "authority", "client_id", "service_account")
    relogin = any(getattr(previous, name) != getattr(config, name) for name in identity)
    mapping: dict[str, str | int] = {}
    for name, value in asdict(config).items():
        if name in {"status", "has_client_secret", "connected_account", "connected_at"}:
            continue
        mapping[name] = int(value) if isinstance(value, bool) else value
    if client_secret:
        mapping["client_secret"] = box.encrypt(client_secret)
        relogin = True
    if relogin or previous.status == Status.NOT_CONFIGURED:
        mapping.update(status=Status.CONFIGURED, connected_account="", connected_at=0)
    pipe = conn.pipeline()
    pipe.hset(CONNECTION_KEY, mapping=mapping)
    if relogin:
        pipe.hdel(CONNECTION_KEY, "refresh_token")
        pipe.delete(DELEGATED_TOKEN_KEY)
    pipe.execute()
    if relogin:  # another tenant, app or account: no cursor of the old one holds
        reconcile.forget_cursors(conn)
    return load(conn)


def client_secret(conn: redis.Redis, box: SecretBox) -> str:
    stored = conn.hget(CONNECTION_KEY, "client_secret")
    return box.decrypt(stored) if stored else ""


def refresh_token(conn: redis.Redis, box: SecretBox) -> str:
    """The service account's refresh token ('' before Authorize or after it died)."""
    stored = conn.hget(CONNECTION_KEY, "refresh_token")
    return box.decrypt(stored) if stored else ""


def store_refresh_token(conn: redis.Redis, box: SecretBox, token: str) -> None:
    """Keep the newest refresh token: Microsoft rotates it on every redemption."""
    conn.hset(CONNECTION_KEY, "refresh_token", box.encrypt(token))


def mark_connected(conn: redis.Redis, box: SecretBox, token: str, account: str) -> None:
    conn.delete(DELEGATED_TOKEN_KEY)
    conn.hset(
        CONNECTION_KEY,
        mapping={
            "refresh_token": box.encrypt(token),
            "status": Status.CONNECTED,
            "connected_account": account,
            "connected_at": int(time.time()),
        },
    )


def mark_reauthorize(conn: redis.Redis) -> None:
    """The refresh token was refused: say so on every page instead of failing silently."""
    pipe = conn.pipeline()
    pipe.hset(CONNECTION_KEY, "status", Status.REAUTHORIZE)
    pipe.hdel(CONNECTION_KEY, "refresh_token")
    pipe.delete(DELEGATED_TOKEN_KEY)
    pipe.execute()


def mark_disconnecting(conn: redis.Redis) -> None:
    conn.hset(CONNECTION_KEY, "status", Status.DISCONNECTING)


def mark_disconnected(conn: redis.Redis) -> None:
    """Our subscriptions are gone: forget the sign-in, keep the configuration."""
    pipe = conn.pipeline()
    pipe.hset(CONNECTION_KEY, mapping={"status": Status.CONFIGURED, "connected_account": ""})
    pipe.hdel(CONNECTION_KEY, "refresh_token")
    pipe.delete(DELEGATED_TOKEN_KEY)
    pipe.execute()
