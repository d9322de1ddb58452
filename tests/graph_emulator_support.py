"""Helpers for the Graph emulator tests: the emulator as a real process, the real SDK against
it, and a small Flask notification endpoint in a thread that records what Graph sends.
"""

from __future__ import annotations

import asyncio
import threading
import time
import warnings
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
from flask import Flask, Response, request
from msgraph import GraphServiceClient
from werkzeug.serving import make_server

# The generated request builders import a deprecated kiota class at import time; the warning
# is the SDK's, not ours (pyproject's filters cover kiota_http and msgraph_core only).
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from msgraph.generated.users.item.calendar_view.delta.delta_request_builder import (
        DeltaRequestBuilder,
    )
    from msgraph.generated.users.item.events.events_request_builder import (
        EventsRequestBuilder,
    )

from core.microsoft.endpoints import GraphEndpoint
from core.microsoft.graph import graph_client, tls_context
from core.microsoft.graph_access import app_credential
from tests.emulator_launch import graph_argv, launch
from tests.harness import GRAPH_CLIENT_ID, GRAPH_CLIENT_SECRET, TENANT, Process, free_port

T = TypeVar("T")

__all__ = ["DeltaRequestBuilder", "Emulator", "EventsRequestBuilder", "Receiver", "running"]


@dataclass
class Emulator:
    """`python -m emulators.graph` started for one test (or module), stopped afterwards."""

    tmp: Path
    args: list[str] = field(default_factory=list)
    process: Process | None = None
    clients: list[GraphServiceClient] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.port = free_port()
        self.ca_file = self.tmp / "graph-ca.pem"
        self.base = f"https://127.0.0.1:{self.port}"

    def start(self) -> Emulator:
        env = {"PYTHONUNBUFFERED": "1", "PATH": "/usr/bin:/bin"}
        argv = graph_argv(self.port, self.ca_file, *self.args)
        self.process, _ = launch(argv, env, self.tmp / "graph.log")
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    @property
    def endpoint(self) -> GraphEndpoint:
        return GraphEndpoint(f"{self.base}/v1.0", self.base, str(self.ca_file))

    def http(self) -> httpx.Client:
        return httpx.Client(base_url=self.base, verify=tls_context(str(self.ca_file)), timeout=15)

    def control(self, method: str, path: str, json: Any = None) -> httpx.Response:
        with self.http() as http:
            return http.request(method, f"/_emulator{path}", json=json)

    def state(self) -> dict[str, Any]:
        return self.control("GET", "/state").raise_for_status().json()  # type: ignore[no-any-return]

    def add_user(self, mail: str, zone: str = "UTC") -> str:
        body = {"mail": mail, "displayName": mail.split("@")[0], "timeZone": zone}
        return self.control("POST", "/users", body).raise_for_status().json()["id"]  # type: ignore[no-any-return]

    def app_token(self) -> str:
        with self.http() as http:
            return app_token(http)

    def client(self) -> GraphServiceClient:
        """The real SDK client the service builds (core/graph.py), bound to the running loop."""
        credential = app_credential(self.endpoint, TENANT, GRAPH_CLIENT_ID, GRAPH_CLIENT_SECRET)
        client = graph_client(self.endpoint, credential)
        self.clients.append(client)
        return client

    def run(self, scenario: Coroutine[Any, Any, T]) -> T:
        """asyncio.run, closing the scenario's clients before their loop goes: the emulator
        keeps connections alive, and a transport outliving its loop cannot close."""

        async def closing() -> T:
            try:
                return await scenario
            finally:
                for client in self.clients:
                    await client.request_adapter._http_client.aclose()
                self.clients.clear()

        return asyncio.run(closing())


@dataclass
class Receiver:
    """A Flask notification endpoint: echoes validationToken (unless told not to), records
    every notification body, and answers them with `status`."""

    echo: bool = True
    status: int = 202
    delay: float = 0.0
    validations: list[str] = field(default_factory=list)
    notifications: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def app(self) -> Flask:
        app = Flask("receiver")

        @app.post("/notify")
        def notify() -> Response:
            token = request.args.get("validationToken")
            if token is not None:
                with self.lock:
                    self.validations.append(token)
                if not self.echo:
                    return Response("nope", status=200, mimetype="text/plain")
                return Response(token, status=200, mimetype="text/plain")
            with self.lock:
                self.notifications.append(request.get_json(force=True))
            time.sleep(self.delay)
            return Response(status=self.status)

        return app

    def received(self) -> list[dict[str, Any]]:
        with self.lock:
            return [item for body in self.notifications for item in body["value"]]


@contextmanager
def serving(app: Flask) -> Iterator[str]:
    """Serves a Flask app on loopback in a thread; yields its base URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(5)


@contextmanager
def running(receiver: Receiver) -> Iterator[str]:
    """Serves the receiver on loopback; yields its notification URL."""
    with serving(receiver.app()) as base:
        yield f"{base}/notify"


def app_token(http: httpx.Client) -> str:
    """An app-only token from the emulator's token endpoint, as the service's app gets one."""
    response = http.post(
        f"/{TENANT}/oauth2/v2.0/token",
        data={"grant_type": "client_credentials", "client_id": GRAPH_CLIENT_ID,
              "client_secret": GRAPH_CLIENT_SECRET,
              "scope": "https://graph.microsoft.com/.default"},
    )  # fmt: skip
    return str(response.raise_for_status().json()["access_token"])
