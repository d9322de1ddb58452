"""Starts the whole system as real processes for end-to-end tests: both emulators, the web
app under gunicorn, RQ workers and the scheduler, all on loopback against a real Redis.

Each process writes its output to a log file in the test's tmp dir; `System.logs()` returns
them, so a failing test can show what happened and a privacy test can search them.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import ssl
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from exsync.processes import Process, wait_until
from tests.emulator_launch import READY, coconut_argv, graph_argv

__all__ = ["Process", "System", "free_port", "wait_until"]

TENANT = "8c3f5a52-6b0e-4c1f-9a57-2f1d0c5e7b10"
GRAPH_CLIENT_ID = "exsync-demo-app"
GRAPH_CLIENT_SECRET = "exsync-demo-secret"
COCONUT_CLIENT_ID = "exsync-demo"
COCONUT_CLIENT_SECRET = "coconut-demo-secret"
COCONUT_WEBHOOK_SECRET = "whsec-test-0123456789abcdef-0123456789abcdef"
# A Fernet key (32 url-safe base64 bytes) for the secrets kept in Redis; tests only.
SECRET_KEY = "dGVzdC1rZXktdGVzdC1rZXktdGVzdC1rZXktdGVzdC0="
# The bearer token a scraper sends for the web app's /metrics; tests only.
METRICS_TOKEN = "metrics-token-for-tests-0123456789abcdef"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class System:
    """The running system; build with `System(tmp_path, redis_url).start()` and always `stop()`."""

    tmp: Path
    redis_url: str
    workers: int = 1
    scheduler: bool = False
    graph_args: list[str] = field(default_factory=list)
    coconut_args: list[str] = field(default_factory=list)
    settings: dict[str, str] = field(default_factory=dict)
    # Point the admin pages' "worldwide" cloud at this run's Graph emulator.
    cloud_override: bool = False
    # Serve /metrics from every worker and the scheduler on ports kept in `metrics_ports`.
    metrics: bool = False
    processes: dict[str, Process] = field(default_factory=dict)
    metrics_ports: dict[str, int] = field(default_factory=dict)
    # Clients handed to tests, closed at stop(): the emulators keep connections alive, and a
    # client left to the garbage collector leaves its socket unclosed (a ResourceWarning).
    clients: list[httpx.Client] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.graph_port = free_port()
        self.coconut_port = free_port()
        self.web_port = free_port()
        self.ca_file = self.tmp / "graph-ca.pem"
        self.graph_base = f"https://127.0.0.1:{self.graph_port}"
        self.coconut_base = f"http://127.0.0.1:{self.coconut_port}"
        self.web_url = f"http://127.0.0.1:{self.web_port}"

    # -- environment ----------------------------------------------------------------------
    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("EXSYNC_")}
        env.update(
            EXSYNC_REDIS_URL=self.redis_url,
            EXSYNC_TENANT_ID=TENANT,
            EXSYNC_CLIENT_ID=GRAPH_CLIENT_ID,
            EXSYNC_CLIENT_SECRET=GRAPH_CLIENT_SECRET,
            EXSYNC_GRAPH_URL=f"{self.graph_base}/v1.0",
            EXSYNC_AUTHORITY=self.graph_base,
            EXSYNC_GRAPH_CA_FILE=str(self.ca_file),
            EXSYNC_COCONUT_URL=f"{self.coconut_base}/api/v2/b2b",
            EXSYNC_COCONUT_CLIENT_ID=COCONUT_CLIENT_ID,
            EXSYNC_COCONUT_CLIENT_SECRET=COCONUT_CLIENT_SECRET,
            EXSYNC_COCONUT_WEBHOOK_SECRET=COCONUT_WEBHOOK_SECRET,
            EXSYNC_PUBLIC_URL=self.web_url,
            EXSYNC_JOB_TIMEOUT="60",
            EXSYNC_SECRET_KEY=SECRET_KEY,
            EXSYNC_METRICS_TOKEN=METRICS_TOKEN,
            PYTHONUNBUFFERED="1",
        )
        if self.cloud_override:
            env.update(
                EXSYNC_CLOUD_OVERRIDE_GRAPH_URL=f"{self.graph_base}/v1.0",
                EXSYNC_CLOUD_OVERRIDE_AUTHORITY=self.graph_base,
            )
        env.update(self.settings)
        return env

    def _process(self, name: str, argv: list[str]) -> Process:
        proc = Process(name, argv, self.env, self.tmp / f"{name}.log")
        self.processes[name] = proc
        proc.start()
        return proc

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> System:
        graph = self._process("graph", graph_argv(self.graph_port, self.ca_file, *self.graph_args))
        coconut = self._process(
            "coconut",
            coconut_argv(self.coconut_port, "--webhook-url", f"{self.web_url}/webhooks/coconut",
                         "--webhook-secret", COCONUT_WEBHOOK_SECRET, "--retry-scale", "0.01",
                         *self.coconut_args),
        )  # fmt: skip
        self._process(
            "web",
            [sys.executable, "-m", "exsync.cli", "web", "--port", str(self.web_port),
             "--workers", "1", "--threads", "8"],
        )  # fmt: skip
        graph.wait_for_line(READY["graph"])
        coconut.wait_for_line(READY["coconut"])
        wait_until(self._web_ready, 30, what="web /healthz")
        for index in range(self.workers):
            self.start_worker(index)
        if self.scheduler:
            self._process(
                "scheduler",
                [
                    sys.executable,
                    "-m",
                    "exsync.cli",
                    "scheduler",
                    "--port",
                    self._port("scheduler"),
                ],
            )
        return self

    def start_worker(self, index: int) -> Process:
        name = f"worker-{index}"
        return self._process(
            name, [sys.executable, "-m", "exsync.cli", "worker", "--port", self._port(name)]
        )

    def _port(self, name: str) -> str:
        if not self.metrics:
            return "0"
        self.metrics_ports[name] = free_port()
        return str(self.metrics_ports[name])

    def kill(self, name: str) -> None:
        """SIGKILL a process (no clean-up of any kind) and reap it."""
        proc = self.processes[name]
        proc.signal(signal.SIGKILL)
        assert proc.popen is not None
        proc.popen.wait(10)

    def restart(self, name: str) -> Process:
        old = self.processes[name]
        old.stop()
        proc = Process(name, old.argv, self.env, old.log_path)
        self.processes[name] = proc
        proc.start()
        return proc

    def stop(self) -> None:
        for client in self.clients:
            client.close()
        self.clients.clear()
        for proc in reversed(list(self.processes.values())):
            proc.stop()

    def _web_ready(self) -> bool:
        with contextlib.suppress(httpx.HTTPError):
            return httpx.get(f"{self.web_url}/healthz", timeout=1).status_code == 200
        return False

    def logs(self) -> str:
        return "\n".join(p.log_path.read_text(errors="replace") for p in self.processes.values())

    # -- talking to the emulators -----------------------------------------------------------
    def graph_http(self) -> httpx.Client:
        return self._track(self._graph_client())

    def coconut_http(self) -> httpx.Client:
        return self._track(self._coconut_client())

    def _graph_client(self) -> httpx.Client:
        trust = ssl.create_default_context(cafile=str(self.ca_file))
        return httpx.Client(base_url=self.graph_base, verify=trust, timeout=10)

    def _coconut_client(self) -> httpx.Client:
        return httpx.Client(base_url=self.coconut_base, timeout=10)

    def _track(self, client: httpx.Client) -> httpx.Client:
        self.clients.append(client)
        return client

    def graph_state(self) -> dict[str, Any]:
        with self._graph_client() as http:
            return http.get("/_emulator/state").raise_for_status().json()

    def coconut_state(self) -> dict[str, Any]:
        with self._coconut_client() as http:
            return http.get("/_emulator/state").raise_for_status().json()
