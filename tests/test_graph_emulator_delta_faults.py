"""Delta paging as Graph really pages it (research/graph-reality.md item 1), through the real
msgraph-sdk: each fault is a per-mailbox switch of the control API, and a mailbox without it
pages exactly at `odata.maxpagesize` as before.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from kiota_abstractions.base_request_configuration import RequestConfiguration
from msgraph.generated.models.date_time_time_zone import DateTimeTimeZone
from msgraph.generated.models.event import Event
from msgraph.generated.models.o_data_errors.o_data_error import ODataError
from msgraph.generated.models.patterned_recurrence import PatternedRecurrence
from msgraph.generated.models.recurrence_pattern import RecurrencePattern
from msgraph.generated.models.recurrence_pattern_type import RecurrencePatternType
from msgraph.generated.models.recurrence_range import RecurrenceRange
from msgraph.generated.models.recurrence_range_type import RecurrenceRangeType
from msgraph.generated.users.item.calendar_view.calendar_view_request_builder import (
    CalendarViewRequestBuilder,
)

from tests.graph_emulator_support import DeltaRequestBuilder, Emulator

pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning:msgraph.*"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning:kiota_abstractions.*"),
]

DAY = datetime(2026, 12, 1, 9, tzinfo=UTC)
WINDOW = ("2026-11-30T00:00:00Z", "2027-01-31T00:00:00Z")
PAGE = 10


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[Emulator]:
    emu = Emulator(tmp_path).start()
    yield emu
    emu.stop()


def _when(moment: datetime) -> DateTimeTimeZone:
    return DateTimeTimeZone(date_time=moment.strftime("%Y-%m-%dT%H:%M:%S"), time_zone="UTC")


def _event(subject: str, start: datetime, days: int = 0) -> Event:
    """A one-hour event; with `days`, a daily series of that many occurrences."""
    event = Event(subject=subject, start=_when(start), end=_when(start + timedelta(hours=1)))
    if days:
        event.recurrence = PatternedRecurrence(
            pattern=RecurrencePattern(type=RecurrencePatternType.Daily, interval=1),
            range=RecurrenceRange(
                type=RecurrenceRangeType.Numbered,
                start_date=start.date(),
                number_of_occurrences=days,
            ),
        )
    return event


@dataclass
class Walk:
    """A delta round followed link by link: each page's ids and links."""

    pages: list[list[str]] = field(default_factory=list)
    next_links: list[str] = field(default_factory=list)
    delta_link: str | None = None

    @property
    def ids(self) -> list[str]:
        return [i for page in self.pages for i in page]


async def _walk(client: Any, uid: str, most: int = 40, link: str | None = None) -> Walk:
    """Follow a delta round (from the window, or from `link`) for at most `most` pages."""
    delta = client.users.by_user_id(uid).calendar_view.delta
    params = DeltaRequestBuilder.DeltaRequestBuilderGetQueryParameters(
        start_date_time=WINDOW[0], end_date_time=WINDOW[1]
    )
    config = RequestConfiguration(query_parameters=None if link else params)
    config.headers.add("Prefer", f"odata.maxpagesize={PAGE}")
    config.headers.add("Prefer", 'outlook.timezone="UTC"')
    walk = Walk()
    builder = delta.with_url(link) if link else delta
    for _ in range(most):
        page = await builder.get(request_configuration=config)
        walk.pages.append([e.id for e in page.value or []])
        if page.odata_delta_link:
            walk.delta_link = page.odata_delta_link
            return walk
        walk.next_links.append(page.odata_next_link)
        builder = delta.with_url(page.odata_next_link)
    return walk


def _arm(emulator: Emulator, **spec: Any) -> None:
    answer = emulator.control("POST", "/faults", spec)
    assert answer.status_code == 201, answer.text


def _mailboxes(emulator: Emulator) -> tuple[str, str]:
    """Two mailboxes with the same calendar: a daily series of 25 and 12 single events."""
    faulty, plain = (
        emulator.add_user("ana@contoso.example"),
        emulator.add_user("ben@contoso.example"),
    )

    async def fill() -> None:
        client = emulator.client()
        for uid in (faulty, plain):
            events = client.users.by_user_id(uid).events
            await events.post(_event("Daily stand-up", DAY, days=25))
            for n in range(12):
                await events.post(_event(f"Meeting {n}", DAY + timedelta(days=n, hours=3)))

    emulator.run(fill())
    return faulty, plain


def test_oversize_pages_carry_a_whole_series(emulator: Emulator) -> None:
    faulty, plain = _mailboxes(emulator)
    _arm(emulator, kind="delta_oversize", mailbox=faulty)

    async def scenario() -> tuple[Walk, Walk]:
        client = emulator.client()
        return await _walk(client, faulty), await _walk(client, plain)

    big, normal = emulator.run(scenario())
    assert [len(p) for p in normal.pages] == [10, 10, 10, 7] and normal.delta_link
    assert len(big.ids) == len(set(big.ids)) == 37 and big.delta_link, "every item, once"
    assert len(big.pages[0]) >= 25 > PAGE, "the first page holds the whole series"
    assert len(big.pages) < len(normal.pages)


def test_a_repeated_next_link_serves_the_same_page_forever(emulator: Emulator) -> None:
    faulty, plain = _mailboxes(emulator)
    _arm(emulator, kind="delta_repeat_link", mailbox=faulty)

    async def scenario() -> tuple[Walk, Walk, Walk]:
        client = emulator.client()
        stuck = await _walk(client, faulty, most=6)
        after = await _walk(client, plain)
        assert emulator.control("DELETE", "/faults").status_code == 204
        return stuck, after, await _walk(client, faulty)

    stuck, plain_walk, cleared = emulator.run(scenario())
    assert stuck.delta_link is None and len(stuck.pages) == 6
    assert len(set(stuck.next_links[1:])) == 1 and stuck.next_links[1] == stuck.next_links[0]
    assert all(page == stuck.pages[1] for page in stuck.pages[1:]) and stuck.pages[1]
    assert plain_walk.delta_link and cleared.delta_link, "others and later rounds page normally"
    assert len(cleared.ids) == 37


def test_changing_next_links_that_never_reach_a_delta_link(emulator: Emulator) -> None:
    faulty, _ = _mailboxes(emulator)
    _arm(emulator, kind="delta_changing_links", mailbox=faulty)

    async def scenario() -> tuple[Walk, Walk]:
        client = emulator.client()
        looping = await _walk(client, faulty, most=12)
        assert emulator.control("DELETE", "/faults").status_code == 204
        return looping, await _walk(client, faulty, link=looping.next_links[-1])

    looping, ended = emulator.run(scenario())
    assert looping.delta_link is None and len(looping.pages) == 12
    assert len(set(looping.next_links)) == 12, "a new nextLink on every page"
    assert sorted(set(looping.ids)) == sorted(set(looping.ids[:37])) and len(set(looping.ids)) == 37
    last = looping.pages[3]
    assert all(page == last for page in looping.pages[4:]), "the last page, again and again"
    assert ended.delta_link and ended.pages == [last], "cleared, the round ends where it was"


def test_empty_pages_that_still_carry_a_next_link(emulator: Emulator) -> None:
    faulty, _ = _mailboxes(emulator)
    _arm(emulator, kind="delta_empty_pages", mailbox=faulty, pages=2)

    async def scenario() -> Walk:
        return await _walk(emulator.client(), faulty)

    walk = emulator.run(scenario())
    assert [len(p) for p in walk.pages] == [0, 0, 10, 0, 0, 10, 0, 0, 10, 0, 0, 7]
    assert walk.delta_link and len(set(walk.ids)) == 37
    assert len(set(walk.next_links)) == len(walk.next_links), "each empty page links on anew"
    assert (
        emulator.control("POST", "/faults", {"kind": "delta_empty_pages", "pages": 0}).status_code
        == 400
    )


@pytest.mark.parametrize("status", [503, 504])
def test_delta_is_unavailable_on_a_mailbox_heavy_with_recurring_series(
    emulator: Emulator, status: int
) -> None:
    light, heavy = (
        emulator.add_user("ana@contoso.example"),
        emulator.add_user("ben@contoso.example"),
    )
    _arm(emulator, kind="delta_unavailable", status=status, series=2, retry_after=1)

    async def scenario() -> None:
        client = emulator.client()
        for uid, series in ((light, 1), (heavy, 2)):
            events = client.users.by_user_id(uid).events
            for n in range(series):
                await events.post(_event(f"Series {n}", DAY + timedelta(hours=n), days=30))
        assert (await _walk(client, light)).delta_link, "one series is not heavy"
        with pytest.raises(ODataError) as refused:
            await _walk(client, heavy)
        assert refused.value.response_status_code == status
        assert refused.value.error.code == "UnknownError"
        assert refused.value.response_headers["Retry-After"] in ("1", ["1"])
        view = client.users.by_user_id(heavy).calendar_view
        query = CalendarViewRequestBuilder.CalendarViewRequestBuilderGetQueryParameters(
            start_date_time=WINDOW[0], end_date_time=WINDOW[1], top=100
        )
        listed = await view.get(RequestConfiguration(query_parameters=query))
        assert len(listed.value) == 60, "calendarView answers the same mailbox"

    emulator.run(scenario())
    wrong = {"kind": "delta_unavailable", "status": 500}
    assert emulator.control("POST", "/faults", wrong).status_code == 400


def test_a_counted_unavailable_fault_passes_and_standing_ones_take_no_count(
    emulator: Emulator,
) -> None:
    uid = emulator.add_user("ana@contoso.example")
    _arm(emulator, kind="delta_unavailable", mailbox=uid, count=1)
    for kind in ("delta_oversize", "delta_repeat_link", "delta_changing_links"):
        spec = {"kind": kind, "mailbox": uid, "count": 1}
        assert emulator.control("POST", "/faults", spec).status_code == 400, kind

    async def scenario() -> None:
        client = emulator.client()
        await client.users.by_user_id(uid).events.post(_event("Daily", DAY, days=5))
        with pytest.raises(ODataError) as refused:
            await _walk(client, uid)
        assert refused.value.response_status_code == 503
        assert (await _walk(client, uid)).delta_link, "the count is spent"

    emulator.run(scenario())
