"""Finding 12: an email under `account` is redacted, and every secret that passes through the
SecretBox and every token the service obtains is cut out of every line, tracebacks included."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pytest
import redis
from cryptography.fernet import Fernet

from core import logs
from core.microsoft.delegated import CACHE_KEY, DelegatedCredential
from core.microsoft.endpoints import GraphEndpoint
from core.microsoft.graph_access import app_credential
from core.secrets import SecretBox
from tests.graph_emulator_support import Emulator
from tests.harness import GRAPH_CLIENT_ID, GRAPH_CLIENT_SECRET, SECRET_KEY, TENANT

log = logging.getLogger("tests.security.redaction")
EMAIL = "jane.doe@bank.example"


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_an_email_logged_as_the_account_is_redacted(
    fmt: str, capsys: pytest.CaptureFixture[str]
) -> None:
    logs.configure("INFO", fmt)

    log.info("admin.signed_in", extra={"account": EMAIL})
    log.info("exchange.connected", extra={"tenant": "contoso", "account": EMAIL})

    err = capsys.readouterr().err
    assert EMAIL not in err
    assert err.count(logs.REDACTED) == 2


def log_quoting(secret: str) -> None:
    """A line quoting `secret`, and a traceback whose exception's message holds it."""
    log.info("probe.quoted %s", secret)
    try:
        raise RuntimeError(f"Microsoft refused the secret {secret!r}")
    except RuntimeError:
        log.exception("probe.failed")


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_a_secret_decrypted_by_the_secret_box_never_reaches_a_line(
    fmt: str, capsys: pytest.CaptureFixture[str]
) -> None:
    logs.configure("INFO", fmt)
    typed = f"client-secret-typed-in-settings-{fmt}~Q8"
    stored = Fernet(SECRET_KEY.encode()).encrypt(typed.encode())  # as Redis holds it

    log_quoting(SecretBox(SECRET_KEY).decrypt(stored))

    err = capsys.readouterr().err
    assert typed not in err
    assert err.count(logs.REDACTED) == 2 and "Traceback" in err


def test_a_secret_encrypted_by_the_secret_box_never_reaches_a_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    logs.configure("INFO", "text")
    refresh = "0.AUoA-refresh-token-saved-at-sign-in-7f3a"

    SecretBox(SECRET_KEY).encrypt(refresh)
    log_quoting(refresh)
    log.warning("probe.refresh_failed", extra={"reason": f"invalid_grant for {refresh}"})

    err = capsys.readouterr().err
    assert refresh not in err
    assert err.count(logs.REDACTED) == 3


def test_the_delegated_access_token_read_from_redis_never_reaches_a_line(
    redis_conn: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    logs.configure("INFO", "text")
    access = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.delegated-access-token"
    cached = json.dumps({"token": access, "expires_on": int(time.time()) + 3600})
    redis_conn.set(CACHE_KEY, Fernet(SECRET_KEY.encode()).encrypt(cached.encode()))

    token = DelegatedCredential(redis_conn, SecretBox(SECRET_KEY), None).get_token("scope")
    log.info("probe.header %s", f"Authorization: Bearer {token.token}")

    err = capsys.readouterr().err
    assert token.token == access
    assert access not in err and logs.REDACTED in err


def test_a_secret_with_quotes_and_backslashes_is_cut_from_json_lines(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """JSON writes `"` and `\\` escaped: the secret must be cut in that form too."""
    logs.configure("INFO", "json")
    secret = 'webhook"secret\\with-quotes'
    logs.redact(secret)

    log.info("probe.quoted %s", secret)

    (line,) = capsys.readouterr().err.splitlines()
    assert json.loads(line)["event"] == f"probe.quoted {logs.REDACTED}"


def test_the_app_only_graph_token_never_reaches_a_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    logs.configure("INFO", "text")
    emulator = Emulator(tmp_path).start()
    try:
        endpoint = GraphEndpoint(graph_url=f"{emulator.base}/v1.0", authority=emulator.base,
                                 ca_file=str(emulator.ca_file))  # fmt: skip
        credential = app_credential(endpoint, TENANT, GRAPH_CLIENT_ID, GRAPH_CLIENT_SECRET)
        token = credential.get_token(endpoint.token_scope).token
    finally:
        emulator.stop()

    log_quoting(token)

    err = capsys.readouterr().err
    assert token not in err
    assert err.count(logs.REDACTED) == 2
