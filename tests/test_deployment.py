"""docker-compose.yml: valid Compose, and shaped as the README promises (no engine runs here,
so the file is checked against the Compose specification's schema instead of `docker compose`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"


def test_compose_file_validates_against_the_compose_spec() -> None:
    checker = Path(sys.executable).with_name("check-jsonschema")
    result = subprocess.run(
        [str(checker), "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


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
