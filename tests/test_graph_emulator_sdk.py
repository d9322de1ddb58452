"""The real msgraph-sdk, authenticated by azure-identity against the emulator's token endpoint,
doing everything the sync does: events CRUD and paging, delta with a deletion, a subscription
whose handshake reaches a Flask endpoint and its renewal, a 429 with Retry-After, a $batch.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from kiota_abstractions.base_request_configuration import RequestConfiguration
from msgraph.generated.models.date_time_time_zone import DateTimeTimeZone
from msgraph.generated.models.day_of_week import DayOfWeek
from msgraph.generated.models.event import Event
from msgraph.generated.models.o_data_errors.o_data_error import ODataError
from msgraph.generated.models.patterned_recurrence import PatternedRecurrence
from msgraph.generated.models.recurrence_pattern import RecurrencePattern
from msgraph.generated.models.recurrence_pattern_type import RecurrencePatternType
from msgraph.generated.models.recurrence_range import RecurrenceRange
from msgraph.generated.models.recurrence_range_type import RecurrenceRangeType
from msgraph.generated.models.subscription import Subscription
from msgraph.generated.models.week_index import WeekIndex
from msgraph.generated.users.item.calendar_view.calendar_view_request_builder import (
    CalendarViewRequestBuilder,
)
from msgraph_core.requests.batch_request_content import BatchRequestContent
from msgraph_core.requests.batch_request_item import BatchRequestItem

from exsync.processes import wait_until
from tests.graph_emulator_support import (
    DeltaRequestBuilder,
    Emulator,
    EventsRequestBuilder,
    Receiver,
    running,
)

# The generated SDK warns about its own deprecated classes when it lazily imports them.
pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning:msgraph.*"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning:kiota_abstractions.*"),
]


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[Emulator]:
    emu = Emulator(tmp_path, ["--notify-retry-scale", "0.01"]).start()
    yield emu
    emu.stop()


def _event(subject: str, start: datetime, hours: int = 1, **extra: object) -> Event:
    return Event(
        subject=subject,
        start=DateTimeTimeZone(date_time=start.strftime("%Y-%m-%dT%H:%M:%S"), time_zone="UTC"),
        end=DateTimeTimeZone(
            date_time=(start + timedelta(hours=hours)).strftime("%Y-%m-%dT%H:%M:%S"),
            time_zone="UTC",
        ),
        **extra,  # type: ignore[arg-type]
    )


DAY = datetime(2026, 12, 1, 9, tzinfo=UTC)


def test_sdk_creates_reads_pages_updates_and_deletes_events(emulator: Emulator) -> None:
    """CRUD through the SDK; a repeated transactionId is refused as Graph refuses it (400
    ErrorDuplicateTransactionId); pages link on."""
    uid = emulator.add_user("ana@contoso.example")

    async def scenario() -> None:
        client = emulator.client()
        events = client.users.by_user_id(uid).events
        created = [
            await events.post(
                _event(f"Meeting {n}", DAY + timedelta(days=n), transaction_id=f"t{n}")
            )
            for n in range(5)
        ]
        with pytest.raises(ODataError) as repeated:
            await events.post(_event("Meeting 0 retried", DAY, transaction_id="t0"))
        assert repeated.value.response_status_code == 400
        assert repeated.value.error.code == "ErrorDuplicateTransactionId"
        assert repeated.value.error.message == (
            "The TransactionId specified in the request has already been used to create a "
            "different event."
        )

        got = await events.by_event_id(created[1].id).get()
        assert got.subject == "Meeting 1"
        assert got.start.date_time == "2026-12-02T09:00:00.0000000"
        assert got.start.time_zone == "UTC"

        query = EventsRequestBuilder.EventsRequestBuilderGetQueryParameters(top=2)
        page = await events.get(RequestConfiguration(query_parameters=query))
        seen = [e.id for e in page.value]
        while page.odata_next_link:
            assert page.odata_next_link.startswith(emulator.base + "/v1.0/")
            page = await events.with_url(page.odata_next_link).get()
            seen += [e.id for e in page.value]
        assert sorted(seen) == sorted(e.id for e in created)

        before = created[2].change_key
        updated = await events.by_event_id(created[2].id).patch(Event(subject="Moved"))
        assert updated.subject == "Moved" and updated.change_key != before

        await events.by_event_id(created[3].id).delete()
        with pytest.raises(ODataError) as missing:
            await events.by_event_id(created[3].id).get()
        assert missing.value.response_status_code == 404
        assert missing.value.error.code == "ErrorItemNotFound"

    emulator.run(scenario())
    stored = emulator.state()["events"][uid]
    assert sorted(e["subject"] for e in stored) == ["Meeting 0", "Meeting 1", "Meeting 4", "Moved"]


DUPLICATE = "ErrorDuplicateTransactionId"


def test_sdk_a_repeated_transaction_id_and_the_switch_that_returns_the_first_event(
    emulator: Emulator,
) -> None:
    """Refused while the first event lives and after it is deleted; `transaction_returns_first`
    (a standing fault) brings back the emulator's old answer: the first event, 201, or a new
    one when the first is gone; clearing the faults makes it strict again."""
    uid = emulator.add_user("abe@contoso.example")

    async def refused(events, subject: str, tx: str) -> ODataError:  # type: ignore[no-untyped-def]
        with pytest.raises(ODataError) as error:
            await events.post(_event(subject, DAY, transaction_id=tx))
        return error.value

    async def scenario() -> None:
        events = emulator.client().users.by_user_id(uid).events
        first = await events.post(_event("First", DAY, transaction_id="tx-1"))
        gone = await events.post(_event("Gone", DAY, transaction_id="tx-2"))
        await events.by_event_id(gone.id).delete()
        for tx in ("tx-1", "tx-2"):
            error = await refused(events, "Again", tx)
            assert (error.response_status_code, error.error.code) == (400, DUPLICATE)

        switch = {"kind": "transaction_returns_first", "mailbox": uid}
        assert emulator.control("POST", "/faults", switch).status_code == 201
        again = await events.post(_event("Again", DAY, transaction_id="tx-1"))
        assert again.id == first.id and again.subject == "First"
        remade = await events.post(_event("Remade", DAY, transaction_id="tx-2"))
        assert remade.id != gone.id and remade.subject == "Remade"

        assert emulator.control("DELETE", "/faults").status_code == 204
        error = await refused(events, "Strict again", "tx-1")
        assert (error.response_status_code, error.error.code) == (400, DUPLICATE)

    emulator.run(scenario())
    assert sorted(e["subject"] for e in emulator.state()["events"][uid]) == ["First", "Remade"]
    other = {"kind": "transaction_returns_first", "count": 1}
    assert emulator.control("POST", "/faults", other).status_code == 400, "a standing fault"


def test_sdk_a_create_failed_after_the_write_then_retried_inside_a_batch(
    emulator: Emulator,
) -> None:
    """`fail_after_write`: the create is made, its answer is a 503; sent again in a `$batch` with
    the same transactionId, its inner answer is Graph's 400 (201 with the first event under the
    switch)."""
    uid = emulator.add_user("bea@contoso.example")
    wrong = {"kind": "fail_after_write", "status": 429}
    assert emulator.control("POST", "/faults", wrong).status_code == 400, "a 5xx, not a 429"
    armed = {"kind": "fail_after_write", "mailbox": uid, "method": "POST", "count": 1}
    assert emulator.control("POST", "/faults", armed).status_code == 201

    async def batch(events, client) -> dict[str, tuple[int, dict]]:  # type: ignore[no-untyped-def]
        items = {
            "retried": BatchRequestItem(
                request_information=events.to_post_request_information(
                    _event("Made once", DAY, transaction_id="tx-once")
                ),
                id="retried",
            ),
            "new": BatchRequestItem(
                request_information=events.to_post_request_information(
                    _event("New", DAY + timedelta(hours=2), transaction_id="tx-new")
                ),
                id="new",
            ),
        }
        base = client.request_adapter.base_url.rstrip("/")
        for item in items.values():  # absolute once the client has sent a request (exchange.py)
            item.url = item.url.removeprefix(base)
        info = await client.batch.to_post_request_information(BatchRequestContent(items))
        raw = await client.request_adapter.send_primitive_async(info, "bytes", {})
        answers = json.loads(raw)["responses"]
        return {a["id"]: (a["status"], a.get("body") or {}) for a in answers}

    async def scenario() -> tuple[dict, dict]:
        client = emulator.client()
        events = client.users.by_user_id(uid).events
        with pytest.raises(ODataError) as failed:
            await events.post(_event("Made once", DAY, transaction_id="tx-once"))
        assert failed.value.response_status_code == 503
        strict = await batch(events, client)
        switch = {"kind": "transaction_returns_first"}
        assert emulator.control("POST", "/faults", switch).status_code == 201
        return strict, await batch(events, client)

    strict, kind = emulator.run(scenario())
    assert strict["retried"][0] == 400 and strict["retried"][1]["error"]["code"] == DUPLICATE
    assert strict["new"][0] == 201
    made = {e["transactionId"]: e for e in emulator.state()["events"][uid]}
    assert sorted(made) == ["tx-new", "tx-once"], "the failed create was made, once"
    assert kind["retried"][0] == 201 and kind["retried"][1]["id"] == made["tx-once"]["id"]
    assert kind["new"][0] == 201 and kind["new"][1]["id"] == made["tx-new"]["id"]


def test_sdk_delta_round_trip_reports_a_deletion(emulator: Emulator) -> None:
    """delta() pages by maxpagesize, ends with a deltaLink; the next round has @removed."""
    uid = emulator.add_user("ben@contoso.example")

    async def scenario() -> None:
        client = emulator.client()
        events = client.users.by_user_id(uid).events
        made = [await events.post(_event(f"E{n}", DAY + timedelta(hours=n))) for n in range(5)]
        delta = client.users.by_user_id(uid).calendar_view.delta
        params = DeltaRequestBuilder.DeltaRequestBuilderGetQueryParameters(
            start_date_time="2026-11-30T00:00:00Z", end_date_time="2026-12-31T00:00:00+00:00"
        )
        config = RequestConfiguration(query_parameters=params)
        config.headers.add("Prefer", "odata.maxpagesize=2")
        config.headers.add("Prefer", 'outlook.timezone="Pacific Standard Time"')
        page = await delta.get(request_configuration=config)
        first_round, pages = list(page.value), 1
        while page.odata_next_link:
            page = await delta.with_url(page.odata_next_link).get()
            first_round += page.value
            pages += 1
        assert pages == 3
        assert sorted(e.id for e in first_round) == sorted(e.id for e in made)
        assert first_round[0].start.time_zone == "Pacific Standard Time"
        delta_link = page.odata_delta_link
        assert delta_link and delta_link.startswith(emulator.base)

        await events.by_event_id(made[1].id).delete()
        await events.by_event_id(made[2].id).patch(Event(subject="Changed"))
        page = await delta.with_url(delta_link).get()
        removed = [e.id for e in page.value if "@removed" in (e.additional_data or {})]
        changed = [e.id for e in page.value if "@removed" not in (e.additional_data or {})]
        assert removed == [made[1].id]
        assert changed == [made[2].id]
        assert page.odata_delta_link

        assert emulator.control("POST", "/faults", {"kind": "expire_delta"}).status_code == 201
        with pytest.raises(ODataError) as stale:
            await delta.with_url(page.odata_delta_link).get()
        assert stale.value.response_status_code == 410
        assert stale.value.error.code == "SyncStateNotFound"

    emulator.run(scenario())
    assert emulator.state()["counters"]["delta_rounds"][uid] == 2


def test_sdk_subscription_handshake_reaches_flask_endpoint_and_renews(emulator: Emulator) -> None:
    """Create performs the handshake; changes notify with clientState; PATCH renews; GET hides
    clientState; 10,080 minutes is refused as live Graph refuses it."""
    uid = emulator.add_user("cid@contoso.example")
    receiver = Receiver()
    with running(receiver) as url:

        async def scenario() -> None:
            client = emulator.client()
            expiry = datetime.now(UTC) + timedelta(minutes=60)
            sub = await client.subscriptions.post(
                Subscription(
                    change_type="created,updated,deleted",
                    notification_url=url,
                    lifecycle_notification_url=url,
                    resource=f"users/{uid}/events",
                    expiration_date_time=expiry,
                    client_state="state-123",
                )
            )
            assert sub.client_state == "state-123"
            assert len(receiver.validations) == 2
            assert receiver.validations[0].startswith("Validation: ")

            fetched = await client.subscriptions.by_subscription_id(sub.id).get()
            assert fetched.client_state is None

            later = datetime.now(UTC) + timedelta(minutes=4000)
            renewed = await client.subscriptions.by_subscription_id(sub.id).patch(
                Subscription(expiration_date_time=later)
            )
            assert abs((renewed.expiration_date_time - later).total_seconds()) < 1

            with pytest.raises(ODataError) as too_long:
                await client.subscriptions.by_subscription_id(sub.id).patch(
                    Subscription(expiration_date_time=datetime.now(UTC) + timedelta(minutes=10080))
                )
            assert too_long.value.response_status_code == 400

            made = await client.users.by_user_id(uid).events.post(_event("Watched", DAY))
            return sub.id, made.id

        sub_id, event_id = emulator.run(scenario())
        wait_until(lambda: len(receiver.received()) >= 2, 10, what="change notifications")
        # Outlook follows a create with an update; delivery order is not guaranteed.
        assert sorted(n["changeType"] for n in receiver.received()) == ["created", "updated"]
        first = next(n for n in receiver.received() if n["changeType"] == "created")
        assert first["subscriptionId"] == sub_id
        assert first["clientState"] == "state-123"
        assert first["resourceData"]["id"] == event_id
        assert first["resource"] == f"Users/{uid}/Events/{event_id}"
        assert emulator.state()["counters"]["notifications"]["delivered"] >= 2


def test_subscription_refused_when_endpoint_does_not_echo_token(emulator: Emulator) -> None:
    uid = emulator.add_user("dee@contoso.example")
    receiver = Receiver(echo=False)
    with running(receiver) as url:

        async def scenario() -> ODataError:
            client = emulator.client()
            with pytest.raises(ODataError) as refused:
                await client.subscriptions.post(
                    Subscription(
                        change_type="updated",
                        notification_url=url,
                        resource=f"users/{uid}/events",
                        expiration_date_time=datetime.now(UTC) + timedelta(hours=2),
                        client_state="x",
                    )
                )
            return refused.value

        error = emulator.run(scenario())
    assert error.response_status_code == 400
    assert "validation request failed" in error.error.message
    assert receiver.validations, "the handshake must have reached the endpoint"
    assert emulator.state()["subscriptions"] == []


def test_sdk_reads_429_with_retry_after(emulator: Emulator) -> None:
    uid = emulator.add_user("eve@contoso.example")
    armed = emulator.control("POST", "/faults", {"kind": "throttle", "count": 1, "retry_after": 7})
    assert armed.status_code == 201

    async def scenario() -> tuple[ODataError, str | None]:
        client = emulator.client()
        with pytest.raises(ODataError) as throttled:
            await client.users.by_user_id(uid).events.get()
        ok = await client.users.by_user_id(uid).events.get()
        return throttled.value, ok.value

    error, after = emulator.run(scenario())
    assert error.response_status_code == 429
    assert error.response_headers.get("retry-after") == "7"
    assert error.error.code == "ApplicationThrottled"
    assert after == []
    assert emulator.state()["counters"]["throttled"] == 1


def test_sdk_sends_a_batch(emulator: Emulator) -> None:
    """Two creates and a read in one $batch; each inner answer comes back under its id."""
    uid = emulator.add_user("fay@contoso.example")

    async def scenario() -> dict[str, int]:
        client = emulator.client()
        events = client.users.by_user_id(uid).events
        items = {
            str(n): BatchRequestItem(
                request_information=events.to_post_request_information(
                    _event(f"Batched {n}", DAY + timedelta(hours=n))
                ),
                id=str(n),
            )
            for n in range(2)
        }
        items["read"] = BatchRequestItem(
            request_information=client.users.by_user_id(uid).to_get_request_information(),
            id="read",
        )
        response = await client.batch.post(batch_request_content=BatchRequestContent(items))
        return {rid: item.status for rid, item in response.responses.items()}

    statuses = emulator.run(scenario())
    assert statuses == {"0": 201, "1": 201, "read": 200}
    assert sorted(e["subject"] for e in emulator.state()["events"][uid]) == [
        "Batched 0",
        "Batched 1",
    ]


# ---------------------------------------------------------------- recurrence patterns
# Every pattern Graph has: relativeMonthly, absoluteYearly and relativeYearly were refused
# before, so a staff member's "second Thursday" or yearly meeting never reached the sync.


def _series(start: str, pattern: dict[str, object], count: int) -> Event:
    kind = RecurrencePatternType(pattern["type"])
    days = [DayOfWeek(d) for d in pattern.get("days", [])]  # type: ignore[attr-defined]
    index = WeekIndex(pattern["index"]) if "index" in pattern else None
    return Event(
        subject="Series",
        start=DateTimeTimeZone(date_time=f"{start}T09:00:00", time_zone="UTC"),
        end=DateTimeTimeZone(date_time=f"{start}T10:00:00", time_zone="UTC"),
        recurrence=PatternedRecurrence(
            pattern=RecurrencePattern(
                type=kind, interval=pattern["interval"], days_of_week=days or None, index=index,
                month=pattern.get("month"), day_of_month=pattern.get("day"),
            ),  # type: ignore[arg-type]
            range=RecurrenceRange(
                type=RecurrenceRangeType.Numbered, start_date=start, number_of_occurrences=count
            ),  # type: ignore[arg-type]
        ),
    )  # fmt: skip


def _days(emulator: Emulator, uid: str, series: Event, until: str) -> list[str]:
    async def scenario() -> list[str]:
        client = emulator.client()
        await client.users.by_user_id(uid).events.post(series)
        params = CalendarViewRequestBuilder.CalendarViewRequestBuilderGetQueryParameters(
            start_date_time="2026-01-01T00:00:00Z", end_date_time=f"{until}T00:00:00Z", top=100
        )
        view = client.users.by_user_id(uid).calendar_view
        page = await view.get(request_configuration=RequestConfiguration(query_parameters=params))
        days = [e.start.date_time[:10] for e in page.value]
        while page.odata_next_link:
            page = await view.with_url(page.odata_next_link).get()
            days += [e.start.date_time[:10] for e in page.value]
        return sorted(days)

    return emulator.run(scenario())


@pytest.mark.parametrize(
    ("start", "pattern", "count", "until", "expected"),
    [
        # The second Thursday of each month (December 10, January 14, February 11).
        ("2026-12-01", {"type": "relativeMonthly", "interval": 1, "days": ["thursday"],
                        "index": "second"}, 3, "2027-06-01",
         ["2026-12-10", "2027-01-14", "2027-02-11"]),
        # The last Friday of every other month.
        ("2026-12-01", {"type": "relativeMonthly", "interval": 2, "days": ["friday"],
                        "index": "last"}, 3, "2027-12-01",
         ["2026-12-25", "2027-02-26", "2027-04-30"]),
        # Yearly on March 15.
        ("2026-12-01", {"type": "absoluteYearly", "interval": 1, "month": 3, "day": 15}, 2,
         "2029-01-01", ["2027-03-15", "2028-03-15"]),
        # The fourth Thursday of November (Thanksgiving in the United States).
        ("2026-01-05", {"type": "relativeYearly", "interval": 1, "month": 11,
                        "days": ["thursday"], "index": "fourth"}, 2, "2028-01-01",
         ["2026-11-26", "2027-11-25"]),
    ],
)  # fmt: skip
def test_every_recurrence_pattern_expands_as_graph_does(
    emulator: Emulator, start: str, pattern: dict[str, object], count: int, until: str,
    expected: list[str],
) -> None:  # fmt: skip
    uid = emulator.add_user("ana@contoso.example")
    assert _days(emulator, uid, _series(start, pattern, count), until) == expected
