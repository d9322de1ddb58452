"""/healthz says the process answers; /readyz says Redis answers too (a load balancer takes a
web process out while its queue is unreachable)."""

from __future__ import annotations

from core.settings import load_settings
from webhooks.app import create_app


def test_healthz_and_readyz_answer_with_redis_up(redis_url: str) -> None:
    client = create_app(load_settings(redis_url=redis_url)).test_client()
    assert client.get("/healthz").get_json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.get_json() == {"status": "ready"}


def test_readyz_is_503_with_a_reason_when_redis_is_down() -> None:
    client = create_app(load_settings(redis_url="redis://127.0.0.1:1/0")).test_client()
    assert client.get("/healthz").status_code == 200
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert "queue unavailable" in ready.get_json()["reason"]
