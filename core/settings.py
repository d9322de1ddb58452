"""Settings from `EXSYNC_*` environment variables, validated once when a process starts.

Each process asks for the settings it cannot run without (`require`), so a web process does not
need Graph credentials and a misconfigured worker stops at start with the variable's name
instead of failing on its first job.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from urllib.parse import urlsplit

from kombu.transport import TRANSPORT_ALIASES
from pydantic import AliasChoices, Field, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from core import secrets
from core.connection import SYNC_PAST_DAYS, EditPolicy
from core.microsoft.endpoints import MICROSOFT_AUTHORITY, MICROSOFT_GRAPH, GraphEndpoint

ENV_PREFIX = "EXSYNC_"
# The app registration an environment-only setup signs in with (core.microsoft.graph_access).
REGISTRATION = ("tenant_id", "client_id", "client_secret")
AUDIT_OFF = {"", "none"}
# The values the demo profile of docker-compose.yml sets, published with the source: anyone can
# sign a webhook or read a refresh token with them, so only a demo (EXSYNC_DEMO) may use them.
DEMO_SECRETS = {
    "secret_key": "ZGVtby1rZXktbm90LWZvci1wcm9kdWN0aW9uLTAwMDA=",
    "coconut_webhook_secret": "demo-webhook-secret-not-for-production",
}
# A webhook secret is an HMAC-SHA256 key, weaker than the hash below its 32 bytes (RFC 2104
# §3); the metrics token can be tried by anyone reaching the web port: as hard to guess.
MIN_SECRET_BYTES = 32
HOW_TO_GENERATE = {
    "secret_key": 'python3 -c "from cryptography.fernet import Fernet; '
    'print(Fernet.generate_key().decode())"',
    "coconut_webhook_secret": 'python3 -c "import secrets; print(secrets.token_urlsafe(32))"',
    "metrics_token": 'python3 -c "import secrets; print(secrets.token_urlsafe(32))"',
}


class SettingsError(Exception):
    """A setting is missing or invalid; the message names the environment variable."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    # Declared first: the secrets' validators read it. Set only by docker-compose.yml's demo
    # profile, which runs against the emulators with the DEMO_SECRETS.
    demo: bool = False
    redis_url: str = Field(
        "redis://127.0.0.1:6379/0",
        validation_alias=AliasChoices("EXSYNC_REDIS_URL", "REDIS_URL"),
    )
    # The CA to check a rediss:// server against (EXSYNC_REDIS_URL's, and a rediss://
    # EXSYNC_AUDIT_URL's); unset, the system's CAs.
    redis_ca_file: str | None = None
    deployment_id: str = Field("exsync", pattern=r"^[A-Za-z0-9_-]{1,40}$")
    public_url: str = "http://127.0.0.1:8000"
    queue_name: str = Field("exsync", pattern=r"^[A-Za-z0-9_-]+$")

    tenant_id: str = ""
    client_id: str = ""
    client_secret: str = Field("", repr=False)
    graph_url: str = MICROSOFT_GRAPH
    authority: str = MICROSOFT_AUTHORITY
    graph_ca_file: str | None = None
    impersonation: bool = True
    # Fernet key(s) for secrets at rest, comma-separated for rotation: the first encrypts.
    secret_key: str = Field("", repr=False)
    # Point the "worldwide" cloud of the settings page elsewhere (the Graph emulator).
    cloud_override_graph_url: str = ""
    cloud_override_authority: str = Field("", validate_default=True)

    coconut_url: str = ""
    coconut_client_id: str = ""
    coconut_client_secret: str = Field("", repr=False)
    coconut_webhook_secret: str = Field("", repr=False)
    coconut_app_url: str = "https://bank.coconutcalendar.com"

    # Jinja2 subject and body (an HTML file) of the event a Coconut appointment becomes.
    event_subject_template: str = ""
    event_body_template: str = ""

    show_event_titles: bool = False
    # Coconut's "manual user syncing": only staff an admin enabled on User Accounts are synced.
    manual_user_sync: bool = False
    # What a sync does when a staff member edits or deletes a projected appointment in Outlook.
    edit_policy: EditPolicy = EditPolicy.RESTORE
    # A sync round that would remove more than this share of a mailbox's busy blocks (and at
    # least hold_min_blocks of them) holds the removals for an admin to release.
    hold_share: float = Field(0.5, gt=0, le=1)
    hold_min_blocks: int = Field(4, ge=1)
    delta_page_limit: int = Field(500, ge=1)
    # A delta round is bounded so Graph's paging cannot loop it (research/graph-reality.md
    # item 1): besides the pages, the items it lists, its time (at most a third of
    # EXSYNC_JOB_TIMEOUT, so the calendarView read that replaces it still fits) and the pages
    # in a row that bring no item id it had not listed yet. A mailbox whose delta misbehaves is
    # read by calendarView, and delta is tried on it again after this back-off, doubled after
    # each further failure up to a day (workers.mailbox_sync).
    delta_item_limit: int = Field(50_000, ge=1)
    delta_round_seconds: float = Field(120, gt=0)
    delta_stall_pages: int = Field(10, ge=1)
    delta_retry_seconds: float = Field(900, ge=0)
    # A mailbox round that finds a burst (core.jobs.BURST_CHANGES notifications since its last
    # read) waits, this long at a time, while the burst keeps coming; at most 10 s.
    coalesce_settle_seconds: float = Field(0.3, ge=0, le=5)

    # Graph subscriptions (app-only mode): asked lifetime (Graph refuses 10,080 minutes and
    # more), renewal this long before expiry plus up to the jitter, so renewals spread out.
    subscription_minutes: int = Field(10_000, ge=45, le=10_000)
    renew_margin_minutes: int = Field(1_440, ge=1)
    renew_jitter_minutes: int = Field(120, ge=0)
    # The scheduler's rhythm, in seconds.
    reconcile_seconds: float = Field(3_600, gt=0)  # Graph's subscriptions against ours
    safety_net_seconds: float = Field(900, gt=0)  # delta for every mailbox, notified or not
    poll_seconds: float = Field(120, gt=0)  # delegated mode: no notifications, so poll
    coconut_reconcile_seconds: float = Field(600, gt=0)  # Coconut changes without a webhook
    silence_seconds: float = Field(21_600, gt=0)  # a live subscription this quiet is flagged
    # A mailbox round whose delta cursor is older than this reads everything again and compares
    # it with Coconut (a full reconciliation). The window moves daily, so a cursor normally
    # lives a day; two days means the daily move was missed (the scheduler or workers were
    # down), and Outlook evicts delta tokens at unpredictable times anyway (research/graph.md).
    cursor_max_age_seconds: float = Field(172_800, gt=0)
    sync_past_days: int = Field(SYNC_PAST_DAYS, ge=0, le=365)
    sync_future_days: int = Field(180, ge=1, le=730)
    max_body_bytes: int = Field(1_048_576, ge=1024)
    # Proxies in front of the web app (a load balancer, an ingress) whose X-Forwarded-For
    # entries name the client: sign-in throttling counts per client address, and behind them
    # every request would come from the proxy's. 0 believes no X-Forwarded-For at all.
    trusted_proxies: int = Field(0, ge=0, le=10)
    # Exchange allows 4 concurrent requests per app and mailbox; lower it to leave room for
    # another application using the same app registration.
    graph_mailbox_concurrency: int = Field(4, ge=1, le=4)
    job_timeout: int = Field(300, ge=10)
    job_retries: int = Field(5, ge=0, le=25)

    log_level: str = "INFO"
    log_format: str = Field("text", pattern=r"^(text|json)$")
    # Where audit events go (a kombu URL: redis://, amqp://...): unset means the service's own
    # Redis, "" or "none" turns them off. May hold a broker password, hence no repr.
    audit_url: str | None = Field(None, repr=False)
    # The bearer token Prometheus sends for the web app's /metrics, which is on the public port:
    # unset, that /metrics refuses. The workers' and scheduler's metrics ports need none.
    metrics_token: str = Field("", repr=False)

    @field_validator("public_url", "graph_url", "authority", "coconut_app_url")
    @classmethod
    def _no_trailing_slash(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"must be an http(s) URL, got {value!r}")
        return value.rstrip("/")

    @field_validator("authority")
    @classmethod
    def _authority_is_tls(cls, value: str) -> str:
        # azure-identity refuses any other authority; say so at start, not at the first token.
        if not value.startswith("https://"):
            raise ValueError(f"must be an https URL (azure-identity requires TLS), got {value!r}")
        return value

    @field_validator("coconut_url")
    @classmethod
    def _coconut_url(cls, value: str) -> str:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError(f"must be an http(s) URL, got {value!r}")
        return value.rstrip("/")

    @field_validator("audit_url")
    @classmethod
    def _audit_url(cls, value: str | None) -> str | None:
        if value is None or value.strip().lower() in AUDIT_OFF:
            return value
        scheme = value.split("://", 1)[0] if "://" in value else ""
        if scheme not in TRANSPORT_ALIASES:
            # Never echo the URL: it may carry the broker's password.
            raise ValueError(f"must be a kombu broker URL (redis://, amqp://...), got {scheme!r}")
        return value

    @field_validator("redis_ca_file")
    @classmethod
    def _redis_ca_file(cls, value: str | None) -> str | None:
        if value and not Path(value).is_file():
            raise ValueError(f"must be a CA certificate file, got {value!r} (no such file)")
        return value

    @field_validator("metrics_token")
    @classmethod
    def _metrics_token(cls, value: str) -> str:
        _long_enough("metrics_token", value)
        return value

    @field_validator("secret_key")
    @classmethod
    def _secret_key(cls, value: str, info: ValidationInfo) -> str:
        if value:
            secrets.check_keys(value)
        keys = {key.strip() for key in value.split(",")}
        _not_public("secret_key", DEMO_SECRETS["secret_key"] in keys, info)
        return value

    @field_validator("coconut_webhook_secret")
    @classmethod
    def _webhook_secret(cls, value: str, info: ValidationInfo) -> str:
        _not_public("coconut_webhook_secret", value == DEMO_SECRETS["coconut_webhook_secret"], info)
        _long_enough("coconut_webhook_secret", value)
        return value

    @field_validator("cloud_override_graph_url", "cloud_override_authority")
    @classmethod
    def _override_url(cls, value: str) -> str:
        if value and not value.startswith("https://"):
            raise ValueError(f"must be an https URL, got {value!r}")
        return value.rstrip("/")

    @field_validator("cloud_override_authority")
    @classmethod
    def _override_pair(cls, value: str, info: ValidationInfo) -> str:
        if bool(value) != bool(info.data.get("cloud_override_graph_url")):
            raise ValueError("set it and EXSYNC_CLOUD_OVERRIDE_GRAPH_URL together, or neither")
        return value

    @cached_property
    def graph_endpoint(self) -> GraphEndpoint:
        return GraphEndpoint(
            graph_url=self.graph_url, authority=self.authority, ca_file=self.graph_ca_file
        )

    @property
    def audit_broker(self) -> str | None:
        """The audit events' broker URL, or None when they are off."""
        if self.audit_url is None:
            return self.redis_url
        return None if self.audit_url.strip().lower() in AUDIT_OFF else self.audit_url

    @property
    def secrets(self) -> list[str]:
        """Every secret value this process was given, for the log redactor (core.logs)."""
        keys = [k.strip() for k in self.secret_key.split(",")]
        passwords = [urlsplit(url).password for url in (self.redis_url, self.audit_broker or "")]
        return [v for v in (self.client_secret, self.coconut_client_secret,
                            self.coconut_webhook_secret, self.metrics_token, *keys,
                            *passwords) if v]  # fmt: skip

    def missing(self, *names: str) -> list[str]:
        """The environment variables of these settings that are left empty."""
        return [ENV_PREFIX + name.upper() for name in names if not getattr(self, name)]

    def require(self, *names: str) -> Settings:
        """Return self, or raise SettingsError naming every required variable left empty."""
        missing = self.missing(*names)
        if missing:
            unset = [name for name in names if name in HOW_TO_GENERATE and not getattr(self, name)]
            hints = [f"generate {ENV_PREFIX}{n.upper()} with: {HOW_TO_GENERATE[n]}" for n in unset]
            problem = f"missing required setting(s): {', '.join(missing)}"
            raise SettingsError("; ".join([problem, *hints]))
        return self


def _long_enough(name: str, value: str) -> None:
    """Refuse a secret set shorter than MIN_SECRET_BYTES (bytes: the key is the bytes)."""
    if value and len(value.encode()) < MIN_SECRET_BYTES:
        raise ValueError(
            f"must be at least {MIN_SECRET_BYTES} bytes, got {len(value.encode())}; "
            f"generate one with: {HOW_TO_GENERATE[name]}"
        )


def _not_public(name: str, is_demo_value: bool, info: ValidationInfo) -> None:
    """Refuse a published demo value outside the demo, saying how to make a real one."""
    if is_demo_value and not info.data.get("demo"):
        raise ValueError(
            "is the public demo value from docker-compose.yml, which anyone can read; "
            f"generate your own with: {HOW_TO_GENERATE[name]}"
        )


def load_settings(**overrides: object) -> Settings:
    """Read the environment (overrides win); raise SettingsError with the variable names."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            field = str(error["loc"][0]) if error["loc"] else "?"
            problems.append(f"{ENV_PREFIX}{field.upper()}: {error['msg']}")
        raise SettingsError("invalid setting(s): " + "; ".join(problems)) from None
