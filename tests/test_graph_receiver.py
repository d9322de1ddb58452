"""The Graph receivers (`/webhooks/graph`, `/webhooks/graph/lifecycle`) through Flask's test
client over the real Redis, fed Graph's documented payload shapes (tests/fixtures/graph, sources
in tests/fixtures/README.md): the validation handshake, what each accepted notification queues,
echoes of our own writes, and every guard's 4xx, which names its reason and writes nothing."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import pytest
import redis
from flask.testing import FlaskClient

from core import store
from core.job_kinds import JobKind
from core.settings import load_settings
from core.sync_records import Block, Projection
from tests.harness import COCONUT_WEBHOOK_SECRET
from tests.receiver_support import queued, refused
from webhooks import graph as graph_receiver
from webhooks.app import create_app
from workers.projection_index import ProjectionIndex

FIXTURES = Path(__file__).parent / "fixtures" / "graph"
NOTIFY, LIFECYCLE = "/webhooks/graph", "/webhooks/graph/lifecycle"
TENANT = "2f6e1c9a-4b8d-4e3f-9a1c-7d5b3e0f8a24"  # the fixtures' tenant
# The fixtures' two subscriptions, as subscriptions.manager.create records them.
SUB_A, MAILBOX_A = "0a7f2c64-9d3e-4b1a-8f5c-6e2d1b0a9c8f", "5c2e0f7a-3b1d-4e6f-8a9b-0c1d2e3f4a5b"
SUB_B, MAILBOX_B = "d41e8b3a-7c25-4f96-b0e1-3a9c5d7f2e68", "9e8d7c6b-5a4f-4e3d-8c2b-1a0f9e8d7c6b"
CLIENT_STATES = {
    SUB_A: "q3Jx0m8Vb2c9ZkP1sT4uW7yA5dF6gH8jK0lN2pR4tVx",
    SUB_B: "Vb8nQ2xL5kJ9cT1rW4eY7uI0oP3aS6dF8gH1jK4lZ2m",
}
MAX_BODY = 65_536
SYNC_MAILBOX = JobKind.SYNC_MAILBOX.path
REAUTHORIZE = JobKind.REAUTHORIZE_SUBSCRIPTION.path
RECREATE = JobKind.RECREATE_SUBSCRIPTION.path


def payload(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text())


def raw(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


@pytest.fixture
def client(redis_url: str) -> FlaskClient:
    return app_client(redis_url, max_body_bytes=MAX_BODY)


def app_client(redis_url: str, **overrides: Any) -> FlaskClient:
    settings = load_settings(redis_url=redis_url, coconut_webhook_secret=COCONUT_WEBHOOK_SECRET,
                             tenant_id=TENANT, **overrides)  # fmt: skip
    return create_app(settings).test_client()


@pytest.fixture
def subscribed(redis_conn: redis.Redis) -> redis.Redis:
    """Both fixture subscriptions known, as subscriptions.manager.create writes them."""
    now = time.time()
    for subscription_id, mailbox in ((SUB_A, MAILBOX_A), (SUB_B, MAILBOX_B)):
        redis_conn.hset(
            store.subscription_key(subscription_id),
            mapping={"user_id": mailbox, "client_state": CLIENT_STATES[subscription_id],
                     "resource": f"users/{mailbox}/events", "expires_at": now + 86_400,
                     "renew_at": now + 3_600, "created_at": now},
        )  # fmt: skip
        redis_conn.set(store.subscription_of_key(mailbox), subscription_id)
    return redis_conn


def post(client: FlaskClient, path: str, body: bytes | dict[str, Any], **headers: str) -> Any:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.post(path, data=data, headers={"Content-Type": "application/json", **headers})


def dirty(conn: redis.Redis, kind: str, item: str) -> int:
    return int(conn.get(store.dirty_key(kind, item)) or 0)


def with_item(name: str, **changes: Any) -> dict[str, Any]:
    """A fixture payload with its first notification changed (None removes a field)."""
    body = payload(name)
    item = body["value"][0]
    for field, value in changes.items():
        if value is None:
            item.pop(field, None)
        else:
            item[field] = value
    return body


# ---------------------------------------------------------------- the validation handshake


@pytest.mark.parametrize("path", [NOTIFY, LIFECYCLE])
def test_the_handshake_echoes_the_decoded_token_as_plain_text(
    client: FlaskClient, redis_conn: redis.Redis, unchanged: None, path: str
) -> None:
    request = payload("validation_request.json")
    token = request["query"]["validationToken"]
    query = urlencode(request["query"], quote_via=quote)
    assert "%3A" in query and " " not in query  # Graph sends it URL-encoded

    answer = client.open(
        f"{path}?{query}", method=request["method"], data=request["body"],
        headers=request["headers"],
    )  # fmt: skip

    assert answer.status_code == 200
    assert answer.mimetype == "text/plain"
    assert answer.get_data(as_text=True) == token


def test_the_handshake_never_answers_html(client: FlaskClient, unchanged: None) -> None:
    token = "<script>alert(1)</script>"
    answer = client.post(f"{NOTIFY}?{urlencode({'validationToken': token})}")
    assert answer.status_code == 200
    assert answer.mimetype == "text/plain"
    assert answer.get_data(as_text=True) == token


def test_an_oversized_validation_token_is_refused(client: FlaskClient, unchanged: None) -> None:
    answer = client.post(f"{NOTIFY}?{urlencode({'validationToken': 'x' * 4097})}")
    assert answer.status_code == 400
    assert "validationToken too long" in answer.get_data(as_text=True)


# ---------------------------------------------------------------- accepted notifications


@pytest.mark.parametrize(
    "name", ["change_created.json", "change_updated.json", "change_deleted.json"]
)
def test_a_change_notification_queues_one_round_of_its_mailbox(
    client: FlaskClient, subscribed: redis.Redis, name: str
) -> None:
    answer = post(client, NOTIFY, raw(name))

    assert answer.status_code == 202, answer.get_data(as_text=True)
    assert answer.get_json() == {"status": "accepted", "mailboxes": 1}
    assert queued(subscribed) == {f"mailbox-{MAILBOX_A}": (SYNC_MAILBOX, (MAILBOX_A,))}
    assert dirty(subscribed, "mailbox", MAILBOX_A) == 1
    heard = subscribed.hget(store.mailbox_key(MAILBOX_A), "last_notification_at")
    assert heard is not None and abs(int(heard) - time.time()) < 60
    assert subscribed.exists(store.noticed_key("mailbox", MAILBOX_A))


def test_a_batch_queues_one_job_per_mailbox_counting_its_changes(
    client: FlaskClient, subscribed: redis.Redis
) -> None:
    answer = post(client, NOTIFY, raw("change_batch.json"))

    assert answer.status_code == 202
    assert answer.get_json() == {"status": "accepted", "mailboxes": 2}
    assert queued(subscribed) == {
        f"mailbox-{MAILBOX_A}": (SYNC_MAILBOX, (MAILBOX_A,)),
        f"mailbox-{MAILBOX_B}": (SYNC_MAILBOX, (MAILBOX_B,)),
    }
    assert dirty(subscribed, "mailbox", MAILBOX_A) == 2  # Outlook's created, then updated
    assert dirty(subscribed, "mailbox", MAILBOX_B) == 1


def test_a_notification_while_the_round_waits_joins_it(
    client: FlaskClient, subscribed: redis.Redis
) -> None:
    for name in ("change_created.json", "change_updated.json", "change_deleted.json"):
        assert post(client, NOTIFY, raw(name)).status_code == 202

    assert list(queued(subscribed)) == [f"mailbox-{MAILBOX_A}"]
    assert dirty(subscribed, "mailbox", MAILBOX_A) == 3


def test_the_ours_in_a_batch_are_queued_and_the_rest_dropped(
    client: FlaskClient, subscribed: redis.Redis
) -> None:
    body = payload("change_batch.json")
    body["value"][2]["clientState"] = "not-the-one-we-gave"

    answer = post(client, NOTIFY, body)

    assert answer.status_code == 202
    assert queued(subscribed) == {f"mailbox-{MAILBOX_A}": (SYNC_MAILBOX, (MAILBOX_A,))}
    assert dirty(subscribed, "mailbox", MAILBOX_B) == 0


def test_the_items_a_batch_drops_make_one_log_line_counting_each_reason(
    client: FlaskClient, subscribed: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    body = payload("change_batch.json")
    body["value"][0]["clientState"] = "guess"
    body["value"][2]["tenantId"] = "11111111-2222-4333-8444-555555555555"
    caplog.clear()

    assert post(client, NOTIFY, body).status_code == 202

    lines = [(r.getMessage(), getattr(r, "refused", None)) for r in caplog.records]
    assert lines == [("graph.item_refused", {"clientState mismatch": 1, "foreign tenant": 1})]


def test_the_most_items_graph_may_send_in_one_post_are_accepted(
    redis_url: str, subscribed: redis.Redis
) -> None:
    item = {"subscriptionId": SUB_A, "clientState": CLIENT_STATES[SUB_A]}

    answer = post(app_client(redis_url), NOTIFY, {"value": [item] * graph_receiver.MAX_ITEMS})

    assert answer.get_json() == {"status": "accepted", "mailboxes": 1}
    assert dirty(subscribed, "mailbox", MAILBOX_A) == graph_receiver.MAX_ITEMS


def test_a_subscription_deleted_is_refused_at_once(
    client: FlaskClient, subscribed: redis.Redis
) -> None:
    assert post(client, NOTIFY, raw("change_created.json")).status_code == 202
    subscribed.delete(store.subscription_key(SUB_A))  # as subscriptions.manager.delete does

    refused(post(client, NOTIFY, raw("change_updated.json")), 403, "unknown subscription")
    assert dirty(subscribed, "mailbox", MAILBOX_A) == 1


# ---------------------------------------------------------------- echoes of our own writes


def change_key(name: str) -> tuple[str, str]:
    data = payload(name)["value"][0]["resourceData"]
    return data["id"], data["@odata.etag"][3:-1]


def projected(conn: redis.Redis, event_id: str, key: str) -> None:
    """We wrote this event (a Coconut appointment's projection) and hold its changeKey."""
    ProjectionIndex(conn).save(
        Projection("appointment", "48213", MAILBOX_A, event_id, change_key=key, generation=1)
    )


def blocked(conn: redis.Redis, event_id: str, key: str) -> None:
    """A busy block in Coconut was made from this very state of the event."""
    block = Block(absence_id=9031, series="", digest="d", version=key)
    conn.hset(store.block_key(MAILBOX_A), event_id, json.dumps(asdict(block)))


@pytest.mark.parametrize("hold", [projected, blocked], ids=["projection", "busy block"])
@pytest.mark.parametrize("name", ["change_created.json", "change_updated.json"])
def test_an_echo_of_a_state_we_hold_queues_nothing_but_counts_as_heard(
    client: FlaskClient, subscribed: redis.Redis, hold: Any, name: str
) -> None:
    hold(subscribed, *change_key(name))

    answer = post(client, NOTIFY, raw(name))

    assert answer.status_code == 202
    assert answer.get_json() == {"status": "accepted", "mailboxes": 0}
    assert queued(subscribed) == {}
    assert dirty(subscribed, "mailbox", MAILBOX_A) == 0
    assert subscribed.hget(store.mailbox_key(MAILBOX_A), "last_notification_at") is not None


@pytest.mark.parametrize("hold", [projected, blocked], ids=["projection", "busy block"])
def test_a_change_after_our_write_is_news(
    client: FlaskClient, subscribed: redis.Redis, hold: Any
) -> None:
    event_id, _ = change_key("change_updated.json")
    hold(subscribed, event_id, change_key("change_created.json")[1])  # the state before

    assert post(client, NOTIFY, raw("change_updated.json")).status_code == 202

    assert list(queued(subscribed)) == [f"mailbox-{MAILBOX_A}"]
    assert dirty(subscribed, "mailbox", MAILBOX_A) == 1


def test_a_deletion_is_news_whatever_we_hold(client: FlaskClient, subscribed: redis.Redis) -> None:
    event_id, key = change_key("change_updated.json")
    projected(subscribed, event_id, key)
    body = payload("change_deleted.json")
    body["value"][0]["resourceData"]["@odata.etag"] = f'W/"{key}"'

    assert post(client, NOTIFY, body).status_code == 202

    assert list(queued(subscribed)) == [f"mailbox-{MAILBOX_A}"]


def test_only_the_news_of_a_batch_with_an_echo_is_counted(
    client: FlaskClient, subscribed: redis.Redis
) -> None:
    batch = payload("change_batch.json")
    event_id = batch["value"][0]["resourceData"]["id"]
    projected(subscribed, event_id, batch["value"][0]["resourceData"]["@odata.etag"][3:-1])

    answer = post(client, NOTIFY, batch)

    assert answer.get_json() == {"status": "accepted", "mailboxes": 2}
    assert dirty(subscribed, "mailbox", MAILBOX_A) == 1  # the `updated` after our `created`
    assert dirty(subscribed, "mailbox", MAILBOX_B) == 1


# ---------------------------------------------------------------- lifecycle notifications


@pytest.mark.parametrize(
    ("name", "repair"),
    [
        ("lifecycle_reauthorization_required.json", REAUTHORIZE),
        ("lifecycle_subscription_removed.json", RECREATE),
        ("lifecycle_missed.json", None),
    ],
)
def test_a_lifecycle_notification_queues_its_repair_and_a_mailbox_round(
    client: FlaskClient, subscribed: redis.Redis, name: str, repair: str | None
) -> None:
    answer = post(client, LIFECYCLE, raw(name))

    assert answer.status_code == 202, answer.get_data(as_text=True)
    assert answer.get_json() == {"status": "accepted", "queued": 1}
    expected = {f"mailbox-{MAILBOX_A}": (SYNC_MAILBOX, (MAILBOX_A,))}
    if repair is not None:
        expected[f"subscription-{SUB_A}"] = (repair, (SUB_A,))
    assert queued(subscribed) == expected


def test_a_lifecycle_batch_of_several_events_queues_each_repair_once(
    client: FlaskClient, subscribed: redis.Redis
) -> None:
    removed = payload("lifecycle_subscription_removed.json")["value"][0]
    missed = {**payload("lifecycle_missed.json")["value"][0],
              "subscriptionId": SUB_B, "clientState": CLIENT_STATES[SUB_B]}  # fmt: skip

    answer = post(client, LIFECYCLE, {"value": [removed, missed, removed]})

    assert answer.get_json() == {"status": "accepted", "queued": 3}
    assert queued(subscribed) == {
        f"subscription-{SUB_A}": (RECREATE, (SUB_A,)),
        f"mailbox-{MAILBOX_A}": (SYNC_MAILBOX, (MAILBOX_A,)),
        f"mailbox-{MAILBOX_B}": (SYNC_MAILBOX, (MAILBOX_B,)),
    }


# ---------------------------------------------------------------- the guards


@pytest.mark.parametrize("path", [NOTIFY, LIFECYCLE])
@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b'{"value": [', "body is not JSON"),
        (b"\xff\xfe{}", "body is not JSON"),
        (b"", "body is not JSON"),
        (b'[{"subscriptionId": "x"}]', "body must be an object with a value array"),
        (b'{"value": {"subscriptionId": "x"}}', "body must be an object with a value array"),
        (b'{"value": ["x"]}', "body must be an object with a value array"),
        (b'{"value": []}', "value is empty"),
    ],
    ids=["truncated", "not utf-8", "empty", "array", "value object", "value strings", "no items"],
)
def test_a_body_that_is_no_notification_is_a_400(
    client: FlaskClient, subscribed: redis.Redis, unchanged: None, path: str, body: bytes,
    reason: str,
) -> None:  # fmt: skip
    refused(post(client, path, body), 400, reason)


@pytest.mark.parametrize("path", [NOTIFY, LIFECYCLE])
@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", ""])
def test_a_body_that_is_not_declared_json_is_a_415(
    client: FlaskClient, subscribed: redis.Redis, unchanged: None, path: str, content_type: str
) -> None:
    name = "change_created.json" if path == NOTIFY else "lifecycle_missed.json"
    answer = client.post(path, data=raw(name), headers={"Content-Type": content_type})
    refused(answer, 415, "Content-Type must be application/json")


@pytest.mark.parametrize(
    ("path", "name"),
    [(NOTIFY, "change_created.json"), (LIFECYCLE, "lifecycle_reauthorization_required.json")],
)
@pytest.mark.parametrize(
    ("changes", "status", "reason"),
    [
        ({"clientState": None}, 403, "clientState mismatch"),
        ({"clientState": CLIENT_STATES[SUB_A][:-1] + "y"}, 403, "clientState mismatch"),
        ({"clientState": CLIENT_STATES[SUB_B]}, 403, "clientState mismatch"),
        ({"clientState": ""}, 403, "clientState mismatch"),
        ({"subscriptionId": "6b1f3e2d-0c9a-4d8e-b7f6-5a4c3b2d1e0f"}, 403, "unknown subscription"),
        ({"subscriptionId": None}, 400, "missing subscriptionId"),
        ({"subscriptionId": 7}, 400, "missing subscriptionId"),
        ({"tenantId": "11111111-2222-4333-8444-555555555555"}, 403, "foreign tenant"),
    ],
    ids=["no clientState", "wrong clientState", "another subscription's clientState",
         "empty clientState", "unknown subscription", "no subscriptionId",
         "numeric subscriptionId", "foreign tenant"],
)  # fmt: skip
def test_a_notification_that_is_not_ours_is_refused(
    client: FlaskClient, subscribed: redis.Redis, unchanged: None, path: str, name: str,
    changes: dict[str, Any], status: int, reason: str,
) -> None:  # fmt: skip
    refused(post(client, path, with_item(name, **changes)), status, reason)


def test_a_subscription_we_never_made_is_refused_although_its_client_state_is_ours(
    client: FlaskClient, redis_conn: redis.Redis, unchanged: None
) -> None:
    refused(post(client, NOTIFY, raw("change_created.json")), 403, "unknown subscription")


def test_a_batch_of_which_no_item_is_ours_names_every_reason(
    client: FlaskClient, subscribed: redis.Redis, unchanged: None
) -> None:
    body = payload("change_batch.json")
    body["value"][0]["clientState"] = "guess"
    body["value"][1]["subscriptionId"] = "6b1f3e2d-0c9a-4d8e-b7f6-5a4c3b2d1e0f"
    body["value"][2]["tenantId"] = "11111111-2222-4333-8444-555555555555"

    answer = post(client, NOTIFY, body)

    refused(answer, 403, "no notification in the batch is ours")
    for reason in ("clientState mismatch", "unknown subscription", "foreign tenant"):
        assert reason in answer.get_json()["reason"]


@pytest.mark.parametrize("event", ["subscriptionDeleted", "", None])
def test_an_unknown_lifecycle_event_is_a_400(
    client: FlaskClient, subscribed: redis.Redis, unchanged: None, event: str | None
) -> None:
    body = with_item("lifecycle_missed.json", lifecycleEvent=event)
    refused(post(client, LIFECYCLE, body), 400, "unknown lifecycleEvent")


def test_a_change_notification_sent_to_the_lifecycle_url_is_a_400(
    client: FlaskClient, subscribed: redis.Redis, unchanged: None
) -> None:
    refused(post(client, LIFECYCLE, raw("change_updated.json")), 400, "unknown lifecycleEvent")


@pytest.mark.parametrize("path", [NOTIFY, LIFECYCLE])
def test_an_oversized_body_is_a_413(
    client: FlaskClient, subscribed: redis.Redis, unchanged: None, path: str
) -> None:
    item = payload("change_created.json")["value"][0]
    body = json.dumps({"value": [item] * (MAX_BODY // len(json.dumps(item)) + 1)}).encode()
    assert len(body) > MAX_BODY

    refused(post(client, path, body), 413, "exceeds the capacity limit")


@pytest.mark.parametrize("path", [NOTIFY, LIFECYCLE])
def test_one_item_more_than_graph_may_send_in_one_post_is_a_413(
    redis_url: str, subscribed: redis.Redis, unchanged: None, path: str
) -> None:
    ours = payload("lifecycle_missed.json")["value"][0]  # the change URL ignores lifecycleEvent
    body = {"value": [ours] * (graph_receiver.MAX_ITEMS + 1)}

    answer = post(app_client(redis_url), path, body)

    refused(answer, 413, f"{graph_receiver.MAX_ITEMS + 1} notifications in one POST")


def test_a_batch_just_under_the_limit_is_accepted(
    client: FlaskClient, subscribed: redis.Redis
) -> None:
    item = payload("change_created.json")["value"][0]
    body = json.dumps({"value": [item] * (MAX_BODY // len(json.dumps(item)) - 1)}).encode()
    assert len(body) <= MAX_BODY

    assert post(client, NOTIFY, body).status_code == 202
    assert list(queued(subscribed)) == [f"mailbox-{MAILBOX_A}"]
