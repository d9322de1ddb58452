"""Graph as it really is, for subscriptions and delivery (research/graph-reality.md items 3 and
5), through the real msgraph-sdk: the 409 for a duplicate subscription, `GET /subscriptions` a
page at a time, Graph's time format in notifications, lifecycle notifications on their own
cadence, several notifications in one POST, failed deliveries retried with growing delays, and
429s as Exchange sends them (`Retry-After: 1`, or none at all).
"""

from __future__ import annotations

import itertools
import re
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from flask import Flask, Response, request
from msgraph import GraphServiceClient
from msgraph.generated.models.o_data_errors.o_data_error import ODataError
from msgraph.generated.models.subscription import Subscription

from core.microsoft.graph import tls_context
from exsync.processes import wait_until
from tests.graph_emulator_support import Emulator
from tests.graph_emulator_support import serving as serve_app

pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning:msgraph.*"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning:kiota_abstractions.*"),
]

GRAPH_INSTANT = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{7}Z$")


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[Emulator]:
    emu = Emulator(tmp_path, ["--notify-retry-scale", "0.01"]).start()
    yield emu
    emu.stop()


@dataclass
class Hooks:
    """A notification endpoint and a lifecycle endpoint: each echoes the validation token and
    records every POST body with the time it came; `/notify` answers `status`."""

    status: int = 202
    posts: dict[str, list[tuple[float, dict[str, Any]]]] = field(
        default_factory=lambda: {"notify": [], "lifecycle": []}
    )
    lock: threading.Lock = field(default_factory=threading.Lock)

    def app(self) -> Flask:
        app = Flask("hooks")

        @app.post("/<kind>")
        def hook(kind: str) -> Response:
            token = request.args.get("validationToken")
            if token is not None:
                return Response(token, status=200, mimetype="text/plain")
            with self.lock:
                self.posts[kind].append((time.monotonic(), request.get_json(force=True)))
            return Response(status=self.status if kind == "notify" else 202)

        return app

    def items(self, kind: str) -> list[dict[str, Any]]:
        with self.lock:
            return [item for _, body in self.posts[kind] for item in body["value"]]

    def times(self, kind: str) -> list[float]:
        with self.lock:
            return [at for at, _ in self.posts[kind]]

    def lifecycle(self, event: str) -> list[dict[str, Any]]:
        return [n for n in self.items("lifecycle") if n["lifecycleEvent"] == event]


def serving(hooks: Hooks) -> AbstractContextManager[str]:
    """The base URL; `{base}/notify` and `{base}/lifecycle` are the two endpoints."""
    return serve_app(hooks.app())


def _subscription(base: str, uid: str, change_type: str = "created,updated,deleted",
                  resource: str | None = None) -> Subscription:  # fmt: skip
    return Subscription(
        change_type=change_type,
        notification_url=f"{base}/notify",
        lifecycle_notification_url=f"{base}/lifecycle",
        resource=resource or f"users/{uid}/events",
        expiration_date_time=datetime.now(UTC) + timedelta(hours=2),
        client_state="state-1",
    )


def _subscribe(emulator: Emulator, base: str, uid: str, **more: str) -> str:
    async def scenario() -> str:
        made = await emulator.client().subscriptions.post(_subscription(base, uid, **more))
        return str(made.id)

    return emulator.run(scenario())


def _arm(emulator: Emulator, **spec: Any) -> None:
    armed = emulator.control("POST", "/faults", spec)
    assert armed.status_code == 201, armed.text


def _event(emulator: Emulator, uid: str, subject: str = "x") -> str:
    body = {"subject": subject, "start": {"dateTime": "2026-12-01T09:00:00", "timeZone": "UTC"},
            "end": {"dateTime": "2026-12-01T10:00:00", "timeZone": "UTC"}}  # fmt: skip
    made = emulator.control("POST", f"/users/{uid}/events", body)
    return str(made.raise_for_status().json()["id"])


def _counters(emulator: Emulator) -> dict[str, int]:
    return emulator.state()["counters"]["notifications"]  # type: ignore[no-any-return]


def test_a_second_subscription_of_a_resource_and_change_type_is_a_409_conflict(
    emulator: Emulator, tmp_path: Path
) -> None:
    """Graph's duplicate rule: same app, resource and changeType, whatever the URLs; another
    changeType is another subscription; a deleted one no longer counts; a switch lifts it."""
    uid = emulator.add_user("ana@contoso.example")
    hooks = Hooks()
    with serving(hooks) as base:

        async def scenario() -> None:
            client = emulator.client()
            first = await client.subscriptions.post(_subscription(base, uid))
            for resource in (f"users/{uid}/events", "users/ANA@contoso.example/events",
                             f"/Users/{uid}/Events"):  # fmt: skip
                with pytest.raises(ODataError) as conflict:
                    await client.subscriptions.post(_subscription(base, uid, resource=resource))
                assert conflict.value.response_status_code == 409
                assert f"Subscription Id {first.id} already exists" in conflict.value.error.message
            other = await client.subscriptions.post(_subscription(base, uid, change_type="deleted"))
            assert other.id != first.id
            await client.subscriptions.by_subscription_id(first.id).delete()
            again = await client.subscriptions.post(_subscription(base, uid))
            assert again.id not in (first.id, other.id)
            _arm(emulator, kind="allow_duplicate_subscriptions")
            assert (await client.subscriptions.post(_subscription(base, uid))).id

        emulator.run(scenario())
    assert len(emulator.state()["subscriptions"]) == 3


def test_subscriptions_are_listed_a_page_at_a_time_with_next_links(emulator: Emulator) -> None:
    users = [emulator.add_user(f"u{n}@contoso.example") for n in range(5)]
    hooks = Hooks()
    with serving(hooks) as base:
        made = {_subscribe(emulator, base, uid) for uid in users}
        _arm(emulator, kind="subscription_page", size=2)

        async def scenario() -> list[list[Subscription]]:
            client: GraphServiceClient = emulator.client()
            page = await client.subscriptions.get()
            pages = [page.value]
            while page.odata_next_link:
                assert page.odata_next_link.startswith(f"{emulator.base}/v1.0/subscriptions?")
                page = await client.subscriptions.with_url(page.odata_next_link).get()
                pages.append(page.value)
            return pages

        pages = emulator.run(scenario())
    assert [len(p) for p in pages] == [2, 2, 1]
    assert {s.id for p in pages for s in p} == made
    assert {s.client_state for p in pages for s in p} == {None}
    with emulator.http() as http:
        bad = http.get("/v1.0/subscriptions", params={"$skiptoken": "%%%"},
                       headers={"Authorization": f"Bearer {emulator.app_token()}"})  # fmt: skip
    assert bad.status_code == 400


def test_notifications_write_the_expiry_as_graph_does(emulator: Emulator) -> None:
    uid = emulator.add_user("ana@contoso.example")
    hooks = Hooks()
    with serving(hooks) as base:
        sub_id = _subscribe(emulator, base, uid)
        _event(emulator, uid)
        emulator.control("POST", f"/subscriptions/{sub_id}/lifecycle", {"event": "missed"})
        wait_until(lambda: len(hooks.items("notify")) >= 2 and hooks.items("lifecycle"), 10,
                   what="change and lifecycle notifications")  # fmt: skip
    for note in hooks.items("notify") + hooks.items("lifecycle"):
        assert GRAPH_INSTANT.match(note["subscriptionExpirationDateTime"]), note


def test_reauthorization_is_required_on_its_own_every_interval_until_done(
    emulator: Emulator,
) -> None:
    """Each interval after the subscription was last authorized or told, until reauthorized;
    reauthorizing (or renewing) starts the interval again."""
    uid, other = (emulator.add_user(f"{n}@contoso.example") for n in ("ana", "bob"))
    hooks = Hooks()
    with serving(hooks) as base:
        sub_id = _subscribe(emulator, base, uid)
        _subscribe(emulator, base, other)
        _arm(emulator, kind="reauthorization_required", every=0.6, mailbox=uid)
        wait_until(lambda: len(hooks.lifecycle("reauthorizationRequired")) >= 2, 10,
                   what="two reauthorizationRequired")  # fmt: skip

        async def reauthorize() -> float:
            await emulator.client().subscriptions.by_subscription_id(sub_id).reauthorize.post()
            return time.monotonic()

        done = emulator.run(reauthorize())
        # One sent just before the reauthorization may still be on its way: 0.1 s covers it.
        after = lambda: [at for at in hooks.times("lifecycle") if at > done + 0.1]  # noqa: E731
        wait_until(after, 10, what="the next reauthorizationRequired")
    notes = hooks.lifecycle("reauthorizationRequired")
    assert {n["subscriptionId"] for n in notes} == {sub_id}, "only the switched mailbox's"
    times = hooks.times("lifecycle")
    assert all(later - earlier >= 0.5 for earlier, later in itertools.pairwise(times))
    assert after()[0] - done >= 0.5, "reauthorizing started the interval again"


def test_a_subscription_is_removed_now_and_then_with_its_notification(
    emulator: Emulator,
) -> None:
    uid = emulator.add_user("ana@contoso.example")
    hooks = Hooks()
    with serving(hooks) as base:
        sub_id = _subscribe(emulator, base, uid)
        _arm(emulator, kind="subscription_removed", every=0.5)
        wait_until(lambda: hooks.lifecycle("subscriptionRemoved"), 10, what="subscriptionRemoved")

        async def gone() -> ODataError:
            with pytest.raises(ODataError) as missing:
                await emulator.client().subscriptions.by_subscription_id(sub_id).get()
            return missing.value

        assert emulator.run(gone()).response_status_code == 404
    assert [n["subscriptionId"] for n in hooks.lifecycle("subscriptionRemoved")] == [sub_id]
    assert hooks.lifecycle("subscriptionRemoved")[0]["clientState"] == "state-1"
    assert emulator.state()["subscriptions"] == []


def test_dropped_notifications_earn_their_subscription_one_missed(emulator: Emulator) -> None:
    """Dropped by a fault, then given up after retries: each time one `missed` (at most one
    a second per subscription), none without the switch."""
    uid = emulator.add_user("ana@contoso.example")
    hooks = Hooks()
    with serving(hooks) as base:
        sub_id = _subscribe(emulator, base, uid, change_type="deleted")
        events = [_event(emulator, uid, str(n)) for n in range(4)]
        _arm(emulator, kind="notification_drop", count=1)
        emulator.control("DELETE", f"/users/{uid}/events/{events[0]}")
        time.sleep(0.5)
        assert hooks.lifecycle("missed") == [], "no `missed` unless switched on"

        _arm(emulator, kind="missed")
        _arm(emulator, kind="notification_drop", count=2)
        for event_id in events[1:3]:
            emulator.control("DELETE", f"/users/{uid}/events/{event_id}")
        wait_until(lambda: hooks.lifecycle("missed"), 10, what="missed after the drops")
        time.sleep(0.3)
        assert len(hooks.lifecycle("missed")) == 1, "two drops within a second: one missed"

        time.sleep(1.0)
        hooks.status = 500
        _arm(emulator, kind="notification_retry", first=0.05, longest=0.1, give_up=0.4)
        emulator.control("DELETE", f"/users/{uid}/events/{events[3]}")
        wait_until(lambda: len(hooks.lifecycle("missed")) == 2, 10,
                   what="missed after the retries gave up")  # fmt: skip
    assert {n["subscriptionId"] for n in hooks.lifecycle("missed")} == {sub_id}
    assert hooks.items("notify"), "the last one was tried before it was given up"
    assert _counters(emulator)["dropped"] == 4


def test_notifications_within_the_window_come_in_one_post(emulator: Emulator) -> None:
    uid = emulator.add_user("ana@contoso.example")
    hooks = Hooks()
    with serving(hooks) as base:
        _subscribe(emulator, base, uid, change_type="deleted")
        events = [_event(emulator, uid, str(n)) for n in range(5)]
        _arm(emulator, kind="notification_batch", window=1.0, size=3)
        for event_id in events:
            emulator.control("DELETE", f"/users/{uid}/events/{event_id}")
        wait_until(lambda: len(hooks.items("notify")) == 5, 10, what="five notifications")
    assert sorted(len(body["value"]) for _, body in hooks.posts["notify"]) == [2, 3]
    assert sorted(n["resourceData"]["id"] for n in hooks.items("notify")) == sorted(events)
    counters = _counters(emulator)
    assert (counters["delivered"], counters["posts"]) == (5, 2)
    announced = emulator.state()["announcements"][uid]
    assert announced["announced_at"] >= announced["changed_at"], "every change was announced"


def test_failed_deliveries_are_retried_with_growing_delays_then_given_up(
    emulator: Emulator,
) -> None:
    uid = emulator.add_user("ana@contoso.example")
    hooks = Hooks(status=503)
    with serving(hooks) as base:
        _subscribe(emulator, base, uid, change_type="deleted")
        event_id = _event(emulator, uid)
        _arm(emulator, kind="notification_retry", first=0.2, longest=0.8, give_up=3.0)
        emulator.control("DELETE", f"/users/{uid}/events/{event_id}")
        wait_until(lambda: _counters(emulator)["dropped"] == 1, 15, what="given up")
    times = hooks.times("notify")
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert len(gaps) >= 4, gaps
    assert gaps[0] < gaps[1] < gaps[2], f"delays grow: {gaps}"
    assert all(0.7 <= gap < 1.3 for gap in gaps[3:]), f"then stay at the longest: {gaps}"
    assert times[-1] - times[0] < 3.0
    assert {n["resourceData"]["id"] for n in hooks.items("notify")} == {event_id}


def test_429s_come_as_exchange_sends_them(tmp_path: Path) -> None:
    """Over MailboxConcurrency: `ApplicationThrottled`, `Retry-After: 1`, and every third
    without one; a `concurrency_throttle` fault answers the same at once."""
    emu = Emulator(tmp_path, ["--max-concurrency", "1", "--latency", "0.6"]).start()
    try:
        uid = emu.add_user("ana@contoso.example")

        async def forced() -> list[ODataError]:
            client = emu.client()
            errors = []
            for retry_after in (None, 1):
                spec = {"kind": "concurrency_throttle", "count": 1, "mailbox": uid}
                _arm(emu, **spec, **({"retry_after": retry_after} if retry_after else {}))
                with pytest.raises(ODataError) as throttled:
                    await client.users.by_user_id(uid).events.get()
                errors.append(throttled.value)
            return errors

        bare, told = emu.run(forced())
        for error in (bare, told):
            assert error.response_status_code == 429
            assert error.error.code == "ApplicationThrottled"
            assert error.error.message == "Application is over its MailboxConcurrency limit."
        assert bare.response_headers.get("retry-after") is None
        assert told.response_headers.get("retry-after") == "1"

        token = emu.app_token()

        def call(_: int) -> httpx.Response:
            with httpx.Client(verify=tls_context(str(emu.ca_file)), timeout=15) as http:
                return http.get(f"{emu.base}/v1.0/users/{uid}/events",
                                headers={"Authorization": f"Bearer {token}"})  # fmt: skip

        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(call, range(4)))
        limited = [r for r in answers if r.status_code == 429]
        assert len(limited) == 3
        assert {r.json()["error"]["code"] for r in limited} == {"ApplicationThrottled"}
        assert sorted(r.headers.get("Retry-After", "none") for r in limited) == ["1", "1", "none"]
    finally:
        emu.stop()
