"""Entra ID as the SDKs meet it: OpenID discovery, the token endpoint and a sign-in page.

Grants: `client_credentials` (azure-identity's ClientSecretCredential; an app token reaches
every mailbox), `authorization_code` with PKCE (msal's auth-code flow; the /authorize page lists
the mailboxes and the tester picks one, the service account first and named when there is one:
`add_service_account`) and `refresh_token`. Access tokens are HS256 JWTs
naming the app (and account), valid while listed here; a delegated token reaches its own
calendar and calendars shared with its account. Failures use Entra's OAuth error body
(`error`, `error_description` with an AADSTS code), which azure-identity and msal turn into
their own exceptions.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import json
import secrets
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from flask import Blueprint, Flask, Response, current_app, jsonify, redirect, request

from emulators.graph import ids
from emulators.graph.errors import GraphError
from emulators.graph.store import Store
from emulators.graph.timeutil import utcnow

GRAPH_SCOPE = "https://graph.microsoft.com/.default"
DELEGATED_SCOPES = "Calendars.ReadWrite Calendars.ReadWrite.Shared User.Read"


@dataclass(frozen=True)
class Token:
    """Who a bearer token speaks for: an app, or an app acting as one account."""

    client_id: str
    user_id: str | None
    expires: float

    @property
    def delegated(self) -> bool:
        return self.user_id is not None


@dataclass(frozen=True)
class _Code:
    client_id: str
    user_id: str
    redirect_uri: str
    challenge: str | None
    method: str
    scope: str
    nonce: str | None
    expires: float


class Tokens:
    """Issued access tokens, authorization codes and refresh tokens."""

    def __init__(self, lifetime: int) -> None:
        self.lifetime = lifetime
        self._lock = threading.Lock()
        self._access: dict[str, Token] = {}
        self._codes: dict[str, _Code] = {}
        self._refresh: dict[str, tuple[str, str, str]] = {}  # token -> client, user, scope
        self._signing_key = secrets.token_bytes(32)

    def issue(self, client_id: str, user_id: str | None, tenant: str) -> tuple[str, int]:
        """A signed JWT saying whose it is (appid; oid and scp when delegated, else roles).
        Validity is what this table says, so a token can also be made stale early."""
        now = int(time.time())
        claims: dict[str, Any] = {
            "aud": "https://graph.microsoft.com",
            "iss": f"https://sts.windows.net/{tenant}/",
            "iat": now,
            "nbf": now,
            "exp": now + self.lifetime,
            "appid": client_id,
            "tid": tenant,
            "uti": ids.opaque_token(16),
            "ver": "1.0",
        }
        if user_id is None:
            claims["roles"] = ["Calendars.ReadWrite", "User.Read.All"]
        else:
            claims.update(oid=user_id, scp=DELEGATED_SCOPES)
        token = self._sign(claims)
        with self._lock:
            self._access[token] = Token(client_id, user_id, time.time() + self.lifetime)
        return token, self.lifetime

    def check(self, token: str) -> Token | None:
        with self._lock:
            found = self._access.get(token)
            if found is not None and found.expires <= time.time():
                del self._access[token]
                return None
            return found

    def expire_all(self) -> None:
        """Makes every issued access token stale (a token expiring mid-run)."""
        with self._lock:
            self._access.clear()

    def new_code(self, code: _Code) -> str:
        value = ids.opaque_token(32)
        with self._lock:
            self._codes[value] = code
        return value

    def take_code(self, value: str) -> _Code | None:
        with self._lock:
            code = self._codes.pop(value, None)
        return code if code is not None and code.expires > time.time() else None

    def new_refresh(self, client_id: str, user_id: str, scope: str) -> str:
        value = ids.opaque_token(48)
        with self._lock:
            self._refresh[value] = (client_id, user_id, scope)
        return value

    def revoke_refresh(self) -> int:
        """Every refresh token dies (a revoked sign-in session or a changed password)."""
        with self._lock:
            count = len(self._refresh)
            self._refresh.clear()
        return count

    def refresh_owner(self, value: str) -> tuple[str, str, str] | None:
        with self._lock:
            return self._refresh.get(value)

    def id_token(
        self, issuer: str, client_id: str, user: Any, tenant: str, nonce: str | None
    ) -> str:
        """An HS256 id_token with the claims msal hands to apps (oid, tid, preferred_username)."""
        now = int(time.time())
        claims = {
            "aud": client_id,
            "iss": issuer,
            "iat": now,
            "nbf": now,
            "exp": now + self.lifetime,
            "name": user.display_name,
            "oid": user.id,
            "preferred_username": user.upn,
            "sub": hashlib.sha256(f"{user.id}:{client_id}".encode()).hexdigest()[:43],
            "tid": tenant,
            "ver": "2.0",
            **({"nonce": nonce} if nonce else {}),
        }
        return self._sign(claims)

    def _sign(self, claims: dict[str, Any]) -> str:
        head = _b64({"alg": "HS256", "typ": "JWT"})
        body = _b64(claims)
        sig = hmac.new(self._signing_key, f"{head}.{body}".encode(), hashlib.sha256).digest()
        return f"{head}.{body}.{base64.urlsafe_b64encode(sig).rstrip(b'=').decode()}"


def _b64(obj: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


bp = Blueprint("auth", __name__)
SERVICE_ACCOUNT = "graph_service_account"  # app.extensions: the service account's UPN


def add_service_account(app: Flask, store: Store, mail: str) -> None:
    """The mailbox an admin signs in as at Authorize, with every other mailbox's calendar
    shared with it (write), as an Exchange admin would for delegated access."""
    account = store.add_user(mail, "Exchange sync service account", "UTC")
    for user in store.user_list():
        if user.id != account.id:
            store.share(user.id, account.id, "write")
    app.extensions[SERVICE_ACCOUNT] = account.upn


def _store() -> Store:
    return current_app.extensions["graph_store"]  # type: ignore[no-any-return]


def _tokens() -> Tokens:
    return current_app.extensions["graph_tokens"]  # type: ignore[no-any-return]


def _oauth_error(status: int, error: str, code: int, description: str) -> Response:
    """Entra's error body; never echoes a secret."""
    now = utcnow().strftime("%Y-%m-%d %H:%M:%SZ")
    body = {
        "error": error,
        "error_description": f"AADSTS{code}: {description} Trace ID: {uuid.uuid4()} "
        f"Correlation ID: {uuid.uuid4()} Timestamp: {now}",
        "error_codes": [code],
        "timestamp": now,
        "trace_id": str(uuid.uuid4()),
        "correlation_id": str(uuid.uuid4()),
        "error_uri": "https://login.microsoftonline.com/error?code=" + str(code),
    }
    response = jsonify(body)
    response.status_code = status
    return response


def _check_tenant(tenant: str) -> Response | None:
    settings = _store().settings
    if tenant.lower() in (settings.tenant.lower(), "common", "organizations"):
        return None
    return _oauth_error(
        400, "invalid_request", 90002, f"Tenant '{tenant}' not found. Check to make sure you "
        "have the correct tenant ID and are signing into the correct cloud.",
    )  # fmt: skip


def _issuer(tenant: str) -> str:
    return f"{request.host_url.rstrip('/')}/{_store().settings.tenant}/v2.0"


@bp.get("/<tenant>/v2.0/.well-known/openid-configuration")
def openid_configuration(tenant: str) -> Response:
    if (refused := _check_tenant(tenant)) is not None:
        return refused
    base = request.host_url.rstrip("/")
    real = _store().settings.tenant
    return jsonify(
        {
            "issuer": _issuer(tenant),
            "authorization_endpoint": f"{base}/{tenant}/oauth2/v2.0/authorize",
            "token_endpoint": f"{base}/{tenant}/oauth2/v2.0/token",
            "device_authorization_endpoint": f"{base}/{tenant}/oauth2/v2.0/devicecode",
            "end_session_endpoint": f"{base}/{tenant}/oauth2/v2.0/logout",
            "jwks_uri": f"{base}/{real}/discovery/v2.0/keys",
            "userinfo_endpoint": f"{base}/oidc/userinfo",
            "response_modes_supported": ["query", "fragment", "form_post"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
            "code_challenge_methods_supported": ["plain", "S256"],
            "claims_supported": ["sub", "iss", "aud", "exp", "iat", "name", "oid", "tid",
                                 "preferred_username", "nonce"],
            "tenant_region_scope": "EU",
            "cloud_instance_name": "microsoftonline.com",
            "request_uri_parameter_supported": False,
            "http_logout_supported": True,
            "frontchannel_logout_supported": True,
        }
    )  # fmt: skip


@bp.get("/<tenant>/discovery/v2.0/keys")
def keys(tenant: str) -> Response:
    return jsonify({"keys": []})


def _client_ok(form: dict[str, str]) -> Response | None:
    settings = _store().settings
    client_id, secret = form.get("client_id", ""), form.get("client_secret", "")
    auth = request.authorization
    if auth is not None and auth.type == "basic":
        client_id, secret = auth.username or "", auth.password or ""
    if client_id != settings.client_id:
        return _oauth_error(
            400, "unauthorized_client", 700016, f"Application with identifier '{client_id}' was "
            "not found in the directory.",
        )  # fmt: skip
    if not hmac.compare_digest(secret.encode(), settings.client_secret.encode()):
        return _oauth_error(
            401, "invalid_client", 7000215, "Invalid client secret provided. Ensure the secret "
            "being sent in the request is the client secret value, not the client secret ID.",
        )  # fmt: skip
    return None


def _token_response(
    client_id: str, user_id: str | None, scope: str, extra: dict[str, Any]
) -> Response:
    token, lifetime = _tokens().issue(client_id, user_id, _store().settings.tenant)
    body = {
        "token_type": "Bearer",
        "expires_in": lifetime,
        "ext_expires_in": lifetime,
        "access_token": token,
        "scope": scope,
        **extra,
    }
    response = jsonify(body)
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.post("/<tenant>/oauth2/v2.0/token")
def token(tenant: str) -> Response:
    if (refused := _check_tenant(tenant)) is not None:
        return refused
    form = request.form.to_dict()
    if (refused := _client_ok(form)) is not None:
        return refused
    grant = form.get("grant_type", "")
    settings = _store().settings
    if grant == "client_credentials":
        scope = form.get("scope", "")
        if scope.split() != [GRAPH_SCOPE]:
            return _oauth_error(
                400, "invalid_scope", 1002012, f"The provided value for scope {scope} is not "
                "valid. Client credential flows must have a scope value with /.default suffixed "
                "to the resource identifier (application ID URI).",
            )  # fmt: skip
        return _token_response(settings.client_id, None, GRAPH_SCOPE, {})
    if grant == "authorization_code":
        return _redeem_code(tenant, form)
    if grant == "refresh_token":
        owner = _tokens().refresh_owner(form.get("refresh_token", ""))
        if owner is None or owner[0] != settings.client_id:
            return _oauth_error(
                400, "invalid_grant", 50173, "The provided grant has expired due to it being "
                "revoked, a fresh auth token is needed. The user might have changed or reset "
                "their password.",
            )  # fmt: skip
        return _delegated(tenant, owner[1], owner[2], None)
    return _oauth_error(
        400, "unsupported_grant_type", 70003, f"The app requested an unsupported grant type "
        f"'{grant}'.",
    )  # fmt: skip


def _redeem_code(tenant: str, form: dict[str, str]) -> Response:
    code = _tokens().take_code(form.get("code", ""))
    if code is None:
        return _oauth_error(
            400, "invalid_grant", 70008, "The provided authorization code or refresh token has "
            "expired due to inactivity, or was already redeemed.",
        )  # fmt: skip
    if form.get("redirect_uri", "") != code.redirect_uri:
        return _oauth_error(
            400, "invalid_grant", 50148, "The redirect_uri does not match the one used in the "
            "authorization request.",
        )  # fmt: skip
    if code.challenge is not None:
        verifier = form.get("code_verifier", "")
        if code.method == "S256":
            digest = hashlib.sha256(verifier.encode()).digest()
            computed = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
        else:
            computed = verifier
        if not hmac.compare_digest(computed.encode(), code.challenge.encode()):
            return _oauth_error(
                400, "invalid_grant", 501481, "The Code_Verifier does not match the "
                "code_challenge supplied in the authorization request.",
            )  # fmt: skip
    return _delegated(tenant, code.user_id, code.scope, code.nonce)


def _delegated(tenant: str, user_id: str, scope: str, nonce: str | None) -> Response:
    store = _store()
    user = store.users.get(user_id)
    if user is None:
        return _oauth_error(400, "invalid_grant", 50034, "The user account does not exist.")
    settings = store.settings
    client_info = {"uid": user.id, "utid": settings.tenant}
    extra = {
        "refresh_token": _tokens().new_refresh(settings.client_id, user.id, scope),
        "id_token": _tokens().id_token(
            _issuer(tenant), settings.client_id, user, settings.tenant, nonce
        ),
        "client_info": _b64(client_info),
    }
    return _token_response(settings.client_id, user.id, DELEGATED_SCOPES, extra)


_AUTHORIZE_FIELDS = (
    "client_id", "response_type", "redirect_uri", "scope", "state", "nonce",
    "code_challenge", "code_challenge_method", "response_mode", "login_hint", "prompt",
    "client_info",
)  # fmt: skip


@bp.get("/<tenant>/oauth2/v2.0/authorize")
def authorize_page(tenant: str) -> Response:
    """The sign-in page: one button per mailbox; the tester picks the account."""
    if (refused := _check_tenant(tenant)) is not None:
        return refused
    args = request.args.to_dict()
    if (problem := _authorize_problem(args)) is not None:
        return problem
    hidden = "".join(
        f'<input type="hidden" name="{name}" value="{html.escape(args[name])}">'
        for name in _AUTHORIZE_FIELDS
        if name in args
    )
    hint = args.get("login_hint", "").lower()
    service = str(current_app.extensions.get(SERVICE_ACCOUNT, "")).lower()
    # The service account first; any other account may still be picked (and is refused by the
    # app that asked, which is what its wrong-account page is for).
    users = sorted(_store().user_list(), key=lambda u: u.upn.lower() != service)
    rows = "".join(
        f'<li><button name="user_id" value="{u.id}"'
        f"{' autofocus' if u.upn.lower() == (hint or service) else ''}>"
        f"{html.escape(u.display_name)} &lt;{html.escape(u.upn)}&gt;</button>"
        f"{' (the service account)' if u.upn.lower() == service else ''}</li>"
        for u in users
    )
    intro = "Graph emulator sign-in: choose the account to sign in as."
    if service:
        intro += (
            f' To authorize the sync, sign in as the service account <strong id="service-account">'
            f"{html.escape(service)}</strong> (the Configuration tab's Service account)."
        )
    page = (
        "<!doctype html><html><head><title>Sign in to your account</title></head><body>"
        f"<h1>Pick an account</h1><p>{intro}</p>"
        f'<form method="post"><ul>{rows}</ul>{hidden}</form></body></html>'
    )
    return Response(page, mimetype="text/html")


def _authorize_problem(args: dict[str, str]) -> Response | None:
    if args.get("client_id") != _store().settings.client_id:
        return _oauth_error(
            400, "unauthorized_client", 700016,
            f"Application with identifier '{args.get('client_id')}' was not found.",
        )  # fmt: skip
    if args.get("response_type") != "code":
        return _oauth_error(
            400, "unsupported_response_type", 900144, "Only response_type=code is supported."
        )
    if not args.get("redirect_uri"):
        return _oauth_error(
            400, "invalid_request", 900144, "The request body must contain the following "
            "parameter: 'redirect_uri'.",
        )  # fmt: skip
    if args.get("code_challenge") and args.get("code_challenge_method", "plain") not in (
        "plain",
        "S256",
    ):
        return _oauth_error(400, "invalid_request", 501491, "Invalid code_challenge_method.")
    return None


@bp.post("/<tenant>/oauth2/v2.0/authorize")
def authorize_pick(tenant: str) -> Response:
    """The account was picked: redirect back with a single-use code (and the state)."""
    if (refused := _check_tenant(tenant)) is not None:
        return refused
    args = request.form.to_dict()
    if (problem := _authorize_problem(args)) is not None:
        return problem
    user = _store().users.get(args.get("user_id", ""))
    if user is None:
        return _oauth_error(400, "invalid_request", 50034, "Pick one of the listed accounts.")
    challenge = args.get("code_challenge") or None
    code = _tokens().new_code(
        _Code(
            client_id=args["client_id"],
            user_id=user.id,
            redirect_uri=args["redirect_uri"],
            challenge=challenge,
            method=args.get("code_challenge_method", "plain"),
            scope=args.get("scope", ""),
            nonce=args.get("nonce") or None,
            expires=time.time() + 600,
        )
    )
    params = {"code": code}
    if "state" in args:
        params["state"] = args["state"]
    params["client_info"] = _b64({"uid": user.id, "utid": _store().settings.tenant})
    params["session_state"] = str(uuid.uuid4())
    if args.get("response_mode") == "form_post":
        return _form_post(args["redirect_uri"], params)
    sep = "&" if "?" in args["redirect_uri"] else "?"
    return redirect(f"{args['redirect_uri']}{sep}{urlencode(params)}", code=302)


def _form_post(target: str, params: dict[str, str]) -> Response:
    """response_mode=form_post: a page that POSTs the answer to the redirect URI."""
    fields = "".join(
        f'<input type="hidden" name="{name}" value="{html.escape(value)}">'
        for name, value in params.items()
    )
    page = (
        "<!doctype html><html><head><title>Working...</title></head>"
        '<body onload="document.forms[0].submit()">'
        f'<form method="post" action="{html.escape(target)}">{fields}'
        "<noscript><button>Continue</button></noscript></form></body></html>"
    )
    return Response(page, mimetype="text/html")


def bearer() -> Token:
    """The caller's valid token, else Graph's 401 (InvalidAuthenticationToken)."""
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise GraphError(
            401, "InvalidAuthenticationToken", "Access token is empty.",
            {"WWW-Authenticate": 'Bearer realm="", error="invalid_token"'},
        )  # fmt: skip
    found = _tokens().check(value.strip())
    if found is None:
        raise GraphError(
            401, "InvalidAuthenticationToken", "Lifetime validation failed, the token is expired.",
            {"WWW-Authenticate": 'Bearer realm="", error="invalid_token"'},
        )  # fmt: skip
    return found
