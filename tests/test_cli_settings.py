"""Start-up validation: a process with a wrong or missing setting stops at once, exit code 2,
with a message that names the environment variable (README, "Configuration")."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from core.settings import SettingsError, load_settings


def exsync(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("EXSYNC_")}
    clean.pop("REDIS_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "exsync.cli", *args],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_worker_without_graph_settings_names_each_missing_variable() -> None:
    result = exsync("worker", "--port", "0", EXSYNC_COCONUT_URL="http://127.0.0.1:9/api")
    assert result.returncode == 2
    assert "EXSYNC_TENANT_ID" in result.stderr
    assert "EXSYNC_CLIENT_ID" in result.stderr


def test_an_invalid_value_is_named_with_the_reason() -> None:
    result = exsync("web", EXSYNC_SYNC_FUTURE_DAYS="lots", EXSYNC_COCONUT_WEBHOOK_SECRET="x" * 20)
    assert result.returncode == 2
    assert "EXSYNC_SYNC_FUTURE_DAYS" in result.stderr


def test_web_refuses_to_start_without_its_secrets() -> None:
    result = exsync("web", "--port", "0")
    assert result.returncode == 2
    assert "EXSYNC_COCONUT_WEBHOOK_SECRET" in result.stderr
    assert "EXSYNC_SECRET_KEY" in result.stderr


def test_an_http_authority_is_refused_because_azure_identity_needs_tls() -> None:
    with pytest.raises(SettingsError, match="EXSYNC_AUTHORITY"):
        load_settings(authority="http://login.example")


def test_secrets_stay_out_of_the_settings_repr() -> None:
    settings = load_settings(client_secret="s3cret-value", coconut_client_secret="other-secret")
    assert "s3cret-value" not in repr(settings)
    assert "other-secret" not in repr(settings)


def test_help_lists_every_process_command() -> None:
    result = exsync("--help")
    assert result.returncode == 0
    for command in ("web", "worker", "scheduler", "emulate", "demo", "failed"):
        assert f"  {command}" in result.stdout


def test_every_setting_is_documented_in_the_readme_or_its_tuning_page() -> None:
    from pathlib import Path

    from core.settings import ENV_PREFIX, Settings

    root = Path(__file__).parent.parent
    readme = (root / "README.md").read_text()
    assert "(docs/configuration.md)" in readme
    documented = readme + (root / "docs" / "configuration.md").read_text()
    missing = [
        ENV_PREFIX + name.upper()
        for name in Settings.model_fields
        if f"`{ENV_PREFIX}{name.upper()}`" not in documented
    ]
    assert missing == [], f"add these to a configuration table: {missing}"
