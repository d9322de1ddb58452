"""Every recurrence pattern Graph has, through the real msgraph-sdk: the emulator expands
relativeMonthly, absoluteYearly and relativeYearly series as Graph does (it refused them
before), so a staff member's "second Thursday" or yearly meeting reaches the sync."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from kiota_abstractions.base_request_configuration import RequestConfiguration
from msgraph.generated.models.date_time_time_zone import DateTimeTimeZone
from msgraph.generated.models.day_of_week import DayOfWeek
from msgraph.generated.models.event import Event
from msgraph.generated.models.patterned_recurrence import PatternedRecurrence
from msgraph.generated.models.recurrence_pattern import RecurrencePattern
from msgraph.generated.models.recurrence_pattern_type import RecurrencePatternType
from msgraph.generated.models.recurrence_range import RecurrenceRange
from msgraph.generated.models.recurrence_range_type import RecurrenceRangeType
from msgraph.generated.models.week_index import WeekIndex
from msgraph.generated.users.item.calendar_view.calendar_view_request_builder import (
    CalendarViewRequestBuilder,
)

from tests.graph_emulator_support import Emulator

pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning:msgraph.*"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning:kiota_abstractions.*"),
]


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[Emulator]:
    emu = Emulator(tmp_path, []).start()
    yield emu
    emu.stop()


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
