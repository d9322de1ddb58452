"""Finding 4: with no Coconut webhook secret, the app served by `gunicorn
'webhooks.app:create_app()'` (not through `exsync web`, which checked) accepted bodies signed
with the empty key. create_app now refuses to start, whatever starts it."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import subprocess
import sys
import time

import pytest

from core.settings import SettingsError, load_settings
from tests.harness import free_port
from webhooks.app import create_app

BODY = json.dumps({"type": "appointment.created", "data": {"type": "appointments", "id": "7"}})


@pytest.fixture
def no_webhook_secret(monkeypatch: pytest.MonkeyPatch, redis_url: str) -> str:
    for variable in list(os.environ):
        if variable.startswith("EXSYNC_"):
            monkeypatch.delenv(variable)
    monkeypatch.setenv("EXSYNC_REDIS_URL", redis_url)
    return redis_url


def signed_with_the_empty_key(body: bytes) -> dict[str, str]:
    stamp = str(int(time.time()))
    digest = hmac.new(b"", f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
    return {"Content-Type": "application/json", "X-Coconut-Timestamp": stamp,
            "X-Coconut-Signature": f"v1={digest}", "X-Coconut-Delivery-Id": "d-1"}  # fmt: skip


def test_create_app_refuses_to_start_without_a_webhook_secret(no_webhook_secret: str) -> None:
    with pytest.raises(SettingsError, match="EXSYNC_COCONUT_WEBHOOK_SECRET"):
        app = create_app()  # as gunicorn calls it
        # Reached only on the old code: show what the missing secret let through.
        answer = app.test_client().post(
            "/webhooks/coconut", data=BODY, headers=signed_with_the_empty_key(BODY.encode())
        )
        pytest.fail(f"started without a secret, and a body signed with '' got {answer.status}")


def test_create_app_refuses_an_explicit_empty_secret(redis_url: str) -> None:
    with pytest.raises(SettingsError, match="EXSYNC_COCONUT_WEBHOOK_SECRET"):
        create_app(load_settings(redis_url=redis_url, coconut_webhook_secret=""))


def test_gunicorn_serving_the_factory_directly_exits_and_says_why(no_webhook_secret: str) -> None:
    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", "1",
         "webhooks.app:create_app()"],
        capture_output=True, text=True, env=env, timeout=30, check=False,
    )  # fmt: skip
    assert result.returncode != 0, result.stderr[-2000:]
    assert "EXSYNC_COCONUT_WEBHOOK_SECRET" in result.stderr
