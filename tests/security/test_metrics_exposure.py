"""Finding 10: /metrics was open on the public web port, where Graph and Coconut reach the
receivers: anyone could read the queue, the subscriptions and every mailbox's id, and make the
app read Redis on demand. It now answers only a scraper with EXSYNC_METRICS_TOKEN, and is off
without one; the workers' and scheduler's own metrics ports are internal (tests/test_metrics.py)."""

from __future__ import annotations

import pytest
from flask.testing import FlaskClient

from core.settings import SettingsError, load_settings
from tests.harness import COCONUT_WEBHOOK_SECRET
from webhooks.app import create_app

METRICS_TOKEN = "metrics-token-for-the-exposure-tests-0123"


def client(redis_url: str, **settings: str) -> FlaskClient:
    secret = COCONUT_WEBHOOK_SECRET
    app_settings = load_settings(redis_url=redis_url, coconut_webhook_secret=secret, **settings)
    return create_app(app_settings).test_client()


def test_metrics_on_the_web_port_are_off_without_a_token_and_say_how_to_turn_them_on(
    redis_url: str,
) -> None:
    answer = client(redis_url).get("/metrics")

    assert answer.status_code == 403, answer.get_data(as_text=True)[:200]
    assert "EXSYNC_METRICS_TOKEN" in answer.get_json()["reason"]
    assert b"exsync_" not in answer.data


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong-token", f"Basic {METRICS_TOKEN}", f"Bearer {METRICS_TOKEN}x"],
)
def test_metrics_refuse_a_scraper_without_the_token(
    redis_url: str, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization else {}

    answer = client(redis_url, metrics_token=METRICS_TOKEN).get("/metrics", headers=headers)

    assert answer.status_code == 401, answer.get_data(as_text=True)[:200]
    assert answer.headers["WWW-Authenticate"].startswith("Bearer")
    assert b"exsync_" not in answer.data


def test_metrics_answer_the_scraper_that_sends_the_token(redis_url: str) -> None:
    """Not an attack: Prometheus with `authorization: {credentials: <token>}` still scrapes."""
    answer = client(redis_url, metrics_token=METRICS_TOKEN).get(
        "/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}
    )

    assert answer.status_code == 200
    assert b"exsync_queue_depth" in answer.data


def test_a_guessable_metrics_token_stops_the_process_at_start() -> None:
    with pytest.raises(SettingsError, match=r"EXSYNC_METRICS_TOKEN: .*at least 32 bytes"):
        load_settings(metrics_token="metrics")
