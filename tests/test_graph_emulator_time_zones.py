"""The Graph emulator takes time zones as Graph does, through the real msgraph-sdk: any Windows
name, only the IANA names of Graph's dateTimeTimeZone page, and a 400
TimeZoneNotSupportedException for the rest, on create, update and inside `$batch`
(research/graph-reality.md §4)."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from kiota_abstractions.base_request_configuration import RequestConfiguration
from msgraph.generated.models.date_time_time_zone import DateTimeTimeZone
from msgraph.generated.models.event import Event
from msgraph.generated.models.o_data_errors.o_data_error import ODataError
from msgraph_core.requests.batch_request_content import BatchRequestContent
from msgraph_core.requests.batch_request_item import BatchRequestItem

from tests.graph_emulator_support import Emulator

with warnings.catch_warnings():  # the SDK's own deprecated classes, imported lazily
    warnings.simplefilter("ignore", DeprecationWarning)
    from msgraph.generated.users.item.calendar_view.calendar_view_request_builder import (
        CalendarViewRequestBuilder,
    )

pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning:msgraph.*"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning:kiota_abstractions.*"),
]

REFUSED = "TimeZoneNotSupportedException"


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[Emulator]:
    emu = Emulator(tmp_path).start()
    yield emu
    emu.stop()


def _event(subject: str, zone: str, hour: int = 9) -> Event:
    """An hour on 2026-12-07 at `hour` o'clock in `zone` (EST: UTC-5)."""
    return Event(
        subject=subject,
        start=DateTimeTimeZone(date_time=f"2026-12-07T{hour:02}:00:00", time_zone=zone),
        end=DateTimeTimeZone(date_time=f"2026-12-07T{hour + 1:02}:00:00", time_zone=zone),
    )


def test_a_windows_name_is_taken_and_an_unlisted_iana_name_refused(emulator: Emulator) -> None:
    uid = emulator.add_user("ana@contoso.example")

    async def scenario() -> None:
        events = emulator.client().users.by_user_id(uid).events
        with pytest.raises(ODataError) as refused:
            await events.post(_event("Toronto", "America/Toronto"))
        assert refused.value.response_status_code == 400
        assert refused.value.error.code == REFUSED
        assert "'America/Toronto'" in refused.value.error.message

        made = await events.post(_event("Eastern", "Eastern Standard Time"))
        assert made.original_start_time_zone == "Eastern Standard Time"
        assert (made.start.date_time, made.start.time_zone) == (
            "2026-12-07T14:00:00.0000000",
            "UTC",
        )
        listed = await events.post(_event("New York", "America/New_York", hour=10))
        assert listed.start.date_time == "2026-12-07T15:00:00.0000000", "listed: taken"
        # Windows names the emulator once did not know: CLDR's whole table is taken.
        await events.post(_event("Yukon", "Yukon Standard Time"))
        await events.post(_event("Mexico", "central standard time (mexico)"))  # any case

        with pytest.raises(ODataError) as moved:
            await events.by_event_id(made.id).patch(_event("Moved", "Europe/Amsterdam", 11))
        assert (moved.value.response_status_code, moved.value.error.code) == (400, REFUSED)
        again = await events.by_event_id(made.id).get()
        assert (again.subject, again.start.date_time) == ("Eastern", "2026-12-07T14:00:00.0000000")
        await events.by_event_id(made.id).patch(_event("Moved", "W. Europe Standard Time", 11))

    emulator.run(scenario())
    stored = {e["subject"]: e for e in emulator.state()["events"][uid]}
    assert sorted(stored) == ["Mexico", "Moved", "New York", "Yukon"]
    assert stored["Moved"]["start"]["dateTime"].startswith("2026-12-07T10:00:00")  # CET: UTC+1
    assert stored["Yukon"]["start"]["dateTime"].startswith("2026-12-07T16:00:00")  # UTC-7
    assert stored["Mexico"]["start"]["dateTime"].startswith("2026-12-07T15:00:00")  # UTC-6


def test_inside_a_batch_an_unlisted_iana_name_is_refused_alone(emulator: Emulator) -> None:
    uid = emulator.add_user("ben@contoso.example")

    async def scenario() -> dict[str, int]:
        client = emulator.client()
        events = client.users.by_user_id(uid).events
        items = {
            rid: BatchRequestItem(
                request_information=events.to_post_request_information(_event(rid, zone)),
                id=rid,
            )
            for rid, zone in (("toronto", "America/Toronto"), ("eastern", "Eastern Standard Time"))
        }
        response = await client.batch.post(batch_request_content=BatchRequestContent(items))
        return {rid: item.status for rid, item in response.responses.items()}

    assert emulator.run(scenario()) == {"toronto": 400, "eastern": 201}
    assert [e["subject"] for e in emulator.state()["events"][uid]] == ["eastern"]

    # The SDK's batch items drop JSON bodies (workers/exchange.py): the inner error, as sent.
    zurich = {"dateTime": "2026-12-07T09:00:00", "timeZone": "Europe/Zurich"}
    event = {"subject": "Zurich", "start": zurich, "end": zurich}
    json = {"id": "1", "method": "POST", "url": f"/users/{uid}/events", "body": event}
    body = {"requests": [{**json, "headers": {"Content-Type": "application/json"}}]}
    token = {"Authorization": f"Bearer {emulator.app_token()}"}
    with emulator.http() as http:
        answer = http.post("/v1.0/$batch", json=body, headers=token)
    (inner,) = answer.raise_for_status().json()["responses"]
    assert (inner["status"], inner["body"]["error"]["code"]) == (400, REFUSED)


def test_calendar_view_answers_in_any_windows_zone(emulator: Emulator) -> None:
    uid = emulator.add_user("cleo@contoso.example", zone="Newfoundland Standard Time")

    async def scenario() -> list[Event]:
        client = emulator.client()
        await client.users.by_user_id(uid).events.post(_event("Call", "UTC", hour=12))
        params = CalendarViewRequestBuilder.CalendarViewRequestBuilderGetQueryParameters(
            start_date_time="2026-12-07T00:00:00Z", end_date_time="2026-12-08T00:00:00Z"
        )
        config = RequestConfiguration(query_parameters=params)
        config.headers.add("Prefer", 'outlook.timezone="Yukon Standard Time"')
        page = await client.users.by_user_id(uid).calendar_view.get(config)
        return list(page.value)

    (event,) = emulator.run(scenario())
    assert (event.start.date_time, event.start.time_zone) == (
        "2026-12-07T05:00:00.0000000",
        "Yukon Standard Time",
    )
