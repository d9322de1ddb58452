"""/healthz says the process answers; /readyz says the queue (Redis) answers and a Graph token
can be had with the credential the workers would use (a load balancer takes a web process out
while either fails), and reports a deployment without any Graph configuration as such."""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx
import redis

from core import connection
from core.connection import Connection, Status
from core.secrets import SecretBox
from core.settings import load_settings
from tests.harness import COCONUT_WEBHOOK_SECRET, SECRET_KEY, TENANT, System, free_port, wait_until
from webhooks.app import create_app

NO_GRAPH = {"tenant_id": "", "client_id": "", "client_secret": "",
            "coconut_webhook_secret": COCONUT_WEBHOOK_SECRET}  # fmt: skip
WRONG_SECRET = "wrong-secret-Zq9~do-not-log-me"


def readyz(system: System) -> httpx.Response:
    return httpx.get(f"{system.web_url}/readyz", timeout=30)


def connect(
    system: System, conn: redis.Redis, *, impersonation: bool, secret: str,
    refresh_token: str = "refresh-token",  # noqa: S107 (the emulator's, not a secret)
) -> None:  # fmt: skip
    """Store an admin's authorized connection to the system's Graph emulator, as Authorize does."""
    box = SecretBox(SECRET_KEY)
    config = Connection(
        tenant_id=TENANT, graph_url=f"{system.graph_base}/v1.0", authority=system.graph_base,
        client_id="exsync-demo-app", impersonation=impersonation,
        service_account="sync@contoso.example",
    )  # fmt: skip
    connection.save_configuration(conn, box, config, secret)
    connection.mark_connected(conn, box, refresh_token, "sync@contoso.example")


def test_healthz_and_readyz_answer_without_any_graph_configuration(redis_url: str) -> None:
    client = create_app(load_settings(redis_url=redis_url, **NO_GRAPH)).test_client()
    assert client.get("/healthz").get_json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    body = ready.get_json()
    assert body["status"] == "ready"
    assert body["checks"]["queue"] == {"status": "ok"}
    assert body["checks"]["graph_token"]["status"] == "not_configured"


def test_readyz_is_503_with_a_reason_when_redis_is_down() -> None:
    client = create_app(load_settings(redis_url="redis://127.0.0.1:1/0", **NO_GRAPH)).test_client()
    assert client.get("/healthz").status_code == 200
    ready = client.get("/readyz")
    assert ready.status_code == 503
    body = ready.get_json()
    assert body["reason"].startswith("queue unavailable")
    assert body["checks"]["queue"]["status"] == "failed"
    assert body["checks"]["graph_token"]["status"] == "skipped"


def test_a_partial_app_registration_is_503_naming_the_missing_setting(redis_url: str) -> None:
    settings = load_settings(
        redis_url=redis_url,
        tenant_id=TENANT,
        client_id="app",
        client_secret="",
        coconut_webhook_secret=COCONUT_WEBHOOK_SECRET,
    )
    ready = create_app(settings).test_client().get("/readyz")
    assert ready.status_code == 503
    assert ready.get_json()["reason"].startswith("no Graph token: ")
    assert "EXSYNC_CLIENT_SECRET not set" in ready.get_json()["reason"]


def test_readyz_gets_a_token_from_the_graph_emulator_and_keeps_the_answer(make_system) -> None:  # type: ignore[no-untyped-def]
    system = make_system(workers=0)
    ready = readyz(system)
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"]["graph_token"] == {"status": "ok", "source": "environment"}
    system.processes["graph"].stop()
    # Within the cache window a probe does not ask Entra again.
    assert readyz(system).status_code == 200


def test_a_wrong_client_secret_is_503_and_the_secret_is_in_neither_answer_nor_log(
    make_system,  # type: ignore[no-untyped-def]
) -> None:
    system = make_system(workers=0, settings={"EXSYNC_CLIENT_SECRET": WRONG_SECRET})
    ready = readyz(system)
    assert ready.status_code == 503
    body = ready.json()
    assert body["reason"] == "no Graph token: The client secret is wrong (AADSTS7000215)"
    assert body["checks"]["graph_token"]["source"] == "environment"
    assert body["checks"]["queue"] == {"status": "ok"}
    assert WRONG_SECRET not in ready.text
    web_log = system.processes["web"].log_path.read_text()
    assert "health.graph_token_failed" in web_log
    assert WRONG_SECRET not in web_log


def test_the_admins_authorized_connection_is_checked_and_rechecked_when_it_changes(
    make_system,
    redis_conn: redis.Redis,  # type: ignore[no-untyped-def]
) -> None:
    system = make_system(workers=0)
    connect(system, redis_conn, impersonation=True, secret=WRONG_SECRET)
    assert connection.load(redis_conn).status == Status.CONNECTED

    refused = readyz(system)
    assert refused.status_code == 503, "the admin's connection wins over the settings"
    assert refused.json()["checks"]["graph_token"]["source"] == "connection"
    assert "client secret is wrong" in refused.json()["reason"]
    assert WRONG_SECRET not in refused.text

    connect(system, redis_conn, impersonation=True, secret="exsync-demo-secret")
    ready = readyz(system)  # a changed connection is checked at once, not after the cache
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"]["graph_token"] == {"status": "ok", "source": "connection"}


def test_a_delegated_connection_whose_refresh_token_died_asks_to_authorize_again(
    make_system,
    redis_conn: redis.Redis,  # type: ignore[no-untyped-def]
) -> None:
    system = make_system(workers=0)
    connect(system, redis_conn, impersonation=False, secret="exsync-demo-secret",
            refresh_token="a-refresh-token-Graph-never-issued")  # fmt: skip

    refused = readyz(system)
    assert refused.status_code == 503, refused.text
    assert refused.json()["reason"] == (
        "no Graph token: the service account must authorize again (Microsoft refused its "
        "refresh token)"
    )
    assert refused.json()["checks"]["graph_token"]["source"] == "connection"
    assert connection.load(redis_conn).status == Status.REAUTHORIZE, "every page says so now"
    assert "exsync-demo-secret" not in refused.text


def test_readyz_turns_503_when_the_running_web_loses_redis(tmp_path: Path, make_system) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no",
         "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        own = redis.Redis(port=port)
        wait_until(lambda: _pings(own), 10, what="the test's own redis-server")
        system = make_system(
            workers=0, settings={"EXSYNC_REDIS_URL": f"redis://127.0.0.1:{port}/0"}
        )
        assert readyz(system).status_code == 200
        server.terminate()
        server.wait(10)
        down = readyz(system)
        assert down.status_code == 503
        assert down.json()["reason"] == "queue unavailable: Redis does not answer, retry later"
        assert httpx.get(f"{system.web_url}/healthz", timeout=5).status_code == 200
    finally:
        server.kill()
        server.wait(10)


def _pings(conn: redis.Redis) -> bool:
    try:
        return bool(conn.ping())
    except redis.ConnectionError:
        return False
