"""A staff member in Toronto gets their events at the right instant, written in a Windows zone:
Graph refuses America/Toronto on create and update (research/graph-reality.md §4), and the
Graph emulator refuses it as Graph does. The real path: Coconut emulator webhooks, gunicorn, an
`exsync worker`, msgraph-sdk, the Graph emulator.

Seed (emulators/coconut/seed.py): staff 1 is user1@contoso.example in Toronto, location 1 the
Main Street Branch in Toronto.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from tests.harness import System
from tests.sync_support import CoconutAdmin, utc, wait_for_events

TORONTO = ZoneInfo("America/Toronto")
EASTERN = "Eastern Standard Time"  # CLDR's Windows name for America/Toronto
MAILBOX = "user1@contoso.example"


@pytest.fixture
def system(make_system) -> System:  # type: ignore[no-untyped-def]
    return make_system(workers=1, graph_args=["--users", "3"])


@pytest.fixture
def coconut(system: System) -> Iterator[CoconutAdmin]:
    admin = CoconutAdmin(system)
    yield admin
    admin.http.close()


def _at(day: datetime, hour: int) -> datetime:
    return datetime(day.year, day.month, day.day, hour, tzinfo=TORONTO)


def test_a_toronto_appointment_and_absence_land_at_their_instants_in_eastern_time(
    system: System, coconut: CoconutAdmin
) -> None:
    day = datetime.now(TORONTO) + timedelta(days=10)
    while day.weekday() >= 5:
        day += timedelta(days=1)

    appointment = coconut.book(_at(day, 10).isoformat(), staff_id=1)
    (event,) = wait_for_events(system, MAILBOX, f"exsync:appointment:{appointment}", 1)
    assert utc(event["start"]) == _at(day, 10).astimezone(UTC)
    assert utc(event["end"]) == _at(day, 11).astimezone(UTC)
    assert (event["originalStartTimeZone"], event["originalEndTimeZone"]) == (EASTERN, EASTERN)

    block = coconut.block(1, _at(day, 15).isoformat(), _at(day, 16).isoformat(),
                          timezone="America/Toronto", title="Branch audit")  # fmt: skip
    (busy,) = wait_for_events(system, MAILBOX, f"exsync:absence:{block}", 1)
    assert (utc(busy["start"]), utc(busy["end"])) == (
        _at(day, 15).astimezone(UTC),
        _at(day, 16).astimezone(UTC),
    )
    assert busy["originalStartTimeZone"] == EASTERN
