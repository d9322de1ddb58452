"""The Authorize button: MSAL's auth-code flow with PKCE and state, as the service account.

`start` builds the flow and keeps it, encrypted, in Redis under its `state` for ten minutes,
bound to the admin session that started it (a callback arriving in another browser is refused).
`finish` redeems the code, reads who signed in from the id token, and refuses anyone but the
configured service account: Coconut's setup article warns that a browser still signed in to
Microsoft authorizes the wrong account without asking.

    SignInFailed    Microsoft (or MSAL) refused; carries a core.microsoft.aadsts.Explanation
    WrongAccount    the sign-in worked, as somebody else
    FlowExpired     no flow for this state, or it belongs to another session
"""

from __future__ import annotations

import json
import logging
import warnings
from dataclasses import dataclass

import msal
import redis

from core import connection, store
from core.connection import Connection
from core.microsoft import entra
from core.microsoft.aadsts import Explanation, explain
from core.secrets import SecretBox

log = logging.getLogger(__name__)
FLOW_SECONDS = 600


class SignInFailed(Exception):
    def __init__(self, explanation: Explanation, microsoft_says: str = "") -> None:
        super().__init__(explanation.code)
        self.explanation = explanation
        self.microsoft_says = microsoft_says


class WrongAccount(Exception):
    def __init__(self, signed_in: str, expected: str, reason: str) -> None:
        super().__init__(reason)
        self.signed_in = signed_in
        self.expected = expected
        self.reason = reason


class FlowExpired(Exception):
    """The sign-in was started too long ago, twice, or from another session."""


@dataclass(frozen=True)
class Authorized:
    account: str
    refresh_token: str


def _flow_key(state: str) -> str:
    return store.admin_authflow_key(state)


def msal_app(
    config: Connection, client_secret: str, ca_file: str | None
) -> msal.ConfidentialClientApplication:
    """MSAL against the configured tenant; raises SignInFailed when the tenant is unknown."""
    try:
        return entra.confidential_app(config, client_secret, ca_file)
    except ValueError:
        # MSAL reads the tenant's OpenID configuration first; an unknown tenant fails there.
        raise SignInFailed(explain("invalid_tenant", "AADSTS90002")) from None
    except OSError as exc:  # requests' errors are OSErrors
        raise SignInFailed(
            Explanation(
                "unreachable",
                f"This server cannot reach the sign-in authority {config.authority}.",
                "Check the cloud chosen on the Configuration tab and this server's outbound "
                "HTTPS access to it, then click Authorize again.",
            ),
            type(exc).__name__,
        ) from None


def start(
    conn: redis.Redis,
    box: SecretBox,
    config: Connection,
    ca_file: str | None,
    redirect_uri: str,
    session_id: str,
) -> str:
    """Begin the sign-in; returns Microsoft's authorize URL to send the browser to."""
    app = msal_app(config, connection.client_secret(conn, box), ca_file)
    with warnings.catch_warnings():
        # MSAL suggests response_mode=form_post; that answer is a cross-site POST, which a
        # SameSite=Lax session cookie (rightly) does not ride along with, so the callback could
        # not tell which admin started the sign-in. The query answer is a top-level GET, and the
        # code in it is single-use and bound to this flow's PKCE verifier.
        warnings.filterwarnings("ignore", message="response_mode='form_post'", module="msal")
        flow = app.initiate_auth_code_flow(
            entra.scopes(config),
            redirect_uri=redirect_uri,
            login_hint=config.service_account,
            prompt="select_account",
        )
    record = json.dumps({"flow": flow, "session": session_id})
    conn.set(_flow_key(flow["state"]), box.encrypt(record), ex=FLOW_SECONDS)
    log.info("exchange.authorize_started", extra={"tenant": config.tenant_id})
    return str(flow["auth_uri"])


def finish(
    conn: redis.Redis,
    box: SecretBox,
    config: Connection,
    ca_file: str | None,
    response: dict[str, str],
    session_id: str,
) -> Authorized:
    """Redeem the code for the service account's tokens, or raise one of the module's errors."""
    stored = conn.getdel(_flow_key(response.get("state", "")))
    if stored is None:
        raise FlowExpired("no sign-in is waiting for this answer")
    record = json.loads(box.decrypt(stored))
    if record["session"] != session_id:
        raise FlowExpired("this sign-in was started by another session")
    if response.get("error"):
        raise SignInFailed(
            explain(response["error"], response.get("error_description", "")),
            response.get("error_description", ""),
        )
    app = msal_app(config, connection.client_secret(conn, box), ca_file)
    try:
        result = app.acquire_token_by_auth_code_flow(record["flow"], response)
    except ValueError:
        raise FlowExpired("the answer does not match the sign-in that was started") from None
    except OSError as exc:
        raise SignInFailed(
            Explanation(
                "unreachable",
                "This server could not reach Microsoft to finish the sign-in.",
                "Check outbound HTTPS access to the sign-in authority, then Authorize again.",
            ),
            type(exc).__name__,
        ) from None
    if "error" in result:
        description = str(result.get("error_description", ""))
        raise SignInFailed(explain(str(result["error"]), description), description)
    claims = result.get("id_token_claims") or {}
    account = str(
        claims.get("preferred_username") or claims.get("upn") or claims.get("email") or ""
    ).lower()
    _check_account(config, account, str(claims.get("tid", "")))
    refresh = result.get("refresh_token")
    if not refresh:
        raise SignInFailed(
            Explanation(
                "no_refresh_token",
                "Microsoft signed the service account in but gave no refresh token.",
                "Make sure the app may be granted offline access (it is part of every "
                "delegated consent), then Authorize again.",
            )
        )
    return Authorized(account=account, refresh_token=str(refresh))


def _check_account(config: Connection, account: str, tenant: str) -> None:
    expected = config.service_account.lower()
    if account != expected:
        raise WrongAccount(
            account or "an account without an email address",
            expected,
            "This is not the service account configured for the integration.",
        )
    if "-" in config.tenant_id and tenant and tenant.lower() != config.tenant_id.lower():
        raise WrongAccount(
            account, expected, f"The account signed in to another tenant ({tenant})."
        )
