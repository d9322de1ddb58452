"""The pure rules that turn an Outlook event into a Coconut busy block (workers.busy_time):
which events block, what the block says, and that a private subject never gets through."""

from __future__ import annotations

import time as clock
import zlib
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.coconut.models import AbsenceWrite
from workers.busy_time import (
    BUSY_TITLE,
    Judged,
    Occurrence,
    block_for,
    block_title,
    iana_zone,
    judge,
    sync_window,
)

SHOW_AS = ["free", "tentative", "busy", "oof", "workingElsewhere", "unknown", None]
SENSITIVITY = ["normal", "personal", "private", "confidential", None]
# Hypothesis takes naive bounds and attaches the zone itself.
INSTANTS = st.datetimes(datetime(2026, 1, 1), datetime(2028, 1, 1), timezones=st.just(UTC))  # noqa: DTZ001
ZONES = ["America/Toronto", "America/Vancouver", "America/Regina", "Europe/Berlin", "UTC"]


def occurrence(start: datetime, end: datetime) -> Occurrence:
    return Occurrence("AAMkAG-event", "ck-1", start, end)


def test_busy_away_and_tentative_block_and_free_or_elsewhere_do_not() -> None:
    start = datetime(2026, 12, 8, 14, tzinfo=UTC)
    for show_as, blocks in [("busy", True), ("oof", True), ("tentative", True), ("free", False),
                            ("workingElsewhere", False), ("unknown", False)]:  # fmt: skip
        judged = judge("Lunch", "normal", show_as, is_cancelled=False, is_all_day=False,
                       show_titles=True)  # fmt: skip
        block = block_for(occurrence(start, start + timedelta(hours=1)), judged, 7, "UTC")
        assert (block is not None) == blocks, show_as


def test_a_timed_block_keeps_the_instants_and_never_the_description() -> None:
    start = datetime(2026, 12, 8, 14, 30, tzinfo=UTC)
    judged = judge("Credit committee", "normal", "busy", is_cancelled=False, is_all_day=False,
                   show_titles=True)  # fmt: skip
    block = block_for(occurrence(start, start + timedelta(minutes=45)), judged, 7,
                      "America/Toronto")  # fmt: skip
    assert block is not None
    assert (block.start, block.end) == (start, start + timedelta(minutes=45))
    assert (block.title, block.notes, block.user_id) == ("Credit committee", None, 7)
    assert (block.external_id, block.external_version) == ("AAMkAG-event", "ck-1")


def test_an_all_day_event_covers_its_days_in_the_staff_members_zone() -> None:
    first = datetime(2026, 12, 7, tzinfo=UTC)  # delta's floating midnight
    judged = judge("Conference", "normal", "oof", is_cancelled=False, is_all_day=True,
                   show_titles=False)  # fmt: skip
    block = block_for(occurrence(first, first + timedelta(days=2)), judged, 7, "America/Regina")
    assert block is not None and block.all_day
    regina = ZoneInfo("America/Regina")
    assert block.start == datetime(2026, 12, 7, tzinfo=regina)
    assert block.end == datetime(2026, 12, 9, tzinfo=regina)
    assert block.title == BUSY_TITLE


def test_zero_length_and_cancelled_events_never_block() -> None:
    start = datetime(2026, 12, 8, 14, tzinfo=UTC)
    judged = judge("x", "normal", "busy", is_cancelled=False, is_all_day=False, show_titles=True)
    assert block_for(occurrence(start, start), judged, 7, "UTC") is None
    cancelled = judge("x", "normal", "busy", is_cancelled=True, is_all_day=False,
                      show_titles=True)  # fmt: skip
    assert block_for(occurrence(start, start + timedelta(hours=1)), cancelled, 7, "UTC") is None


def test_windows_zone_names_map_to_iana_and_unknown_ones_to_utc() -> None:
    assert iana_zone("Pacific Standard Time") == "America/Los_Angeles"
    assert iana_zone("W. Europe Standard Time") == "Europe/Berlin"
    assert iana_zone("Europe/Paris") == "Europe/Paris"
    assert iana_zone("Mars Standard Time") == "UTC"
    assert iana_zone(None) == "UTC"


@given(
    subject=st.text(max_size=300),
    sensitivity=st.sampled_from(SENSITIVITY),
    show_titles=st.booleans(),
)
def test_a_block_shows_the_subject_only_when_allowed_and_the_event_is_normal(
    subject: str, sensitivity: str | None, show_titles: bool
) -> None:
    title = block_title(subject, sensitivity, show_titles)
    normal = sensitivity == "normal"
    if not (show_titles and normal):
        assert title == BUSY_TITLE
    else:
        assert title == (" ".join(subject.split())[:255] or BUSY_TITLE)
    assert len(title) <= 255


@given(
    subject=st.text(min_size=4, max_size=60).filter(lambda s: s.strip() and s.strip() != "Busy"),
    sensitivity=st.sampled_from(["private", "confidential"]),
    show_as=st.sampled_from(SHOW_AS),
    all_day=st.booleans(),
    show_titles=st.booleans(),
    zone=st.sampled_from(ZONES),
)
def test_a_private_or_confidential_subject_never_reaches_a_block(
    subject: str, sensitivity: str, show_as: str | None, all_day: bool, show_titles: bool,
    zone: str,
) -> None:  # fmt: skip
    start = datetime(2026, 12, 8, tzinfo=UTC)
    judged = judge(subject, sensitivity, show_as, is_cancelled=False, is_all_day=all_day,
                   show_titles=show_titles)  # fmt: skip
    block = block_for(occurrence(start, start + timedelta(days=1)), judged, 7, zone)
    assert judged.title == BUSY_TITLE
    assert block is None or (block.title == BUSY_TITLE and block.notes is None)


@given(
    start=INSTANTS,
    days=st.integers(1, 14),
    zone=st.sampled_from(ZONES),
)  # fmt: skip
def test_all_day_blocks_run_whole_days_midnight_to_midnight_in_the_staff_zone(
    start: datetime, days: int, zone: str
) -> None:
    floating = datetime.combine(start.date(), time(0), UTC)
    judged = judge("Off", "normal", "oof", is_cancelled=False, is_all_day=True, show_titles=True)
    block = block_for(occurrence(floating, floating + timedelta(days=days)), judged, 1, zone)
    assert block is not None
    local_start, local_end = block.start.astimezone(ZoneInfo(zone)), block.end.astimezone(
        ZoneInfo(zone))  # fmt: skip
    assert local_start.time() == time(0) and local_end.time() == time(0)
    assert (local_end.date() - local_start.date()).days == days
    assert local_start.date() == start.date()


@given(
    start=INSTANTS,
    minutes=st.integers(-60, 600),
    show_as=st.sampled_from(SHOW_AS),
    cancelled=st.booleans(),
)  # fmt: skip
def test_a_timed_block_exists_exactly_when_the_event_blocks_and_has_length(
    start: datetime, minutes: int, show_as: str | None, cancelled: bool
) -> None:
    judged = judge("x", "normal", show_as, is_cancelled=cancelled, is_all_day=False,
                   show_titles=True)  # fmt: skip
    end = start + timedelta(minutes=minutes)
    block = block_for(occurrence(start, end), judged, 1, "UTC")
    blocking = (show_as or "busy") in {"busy", "oof", "tentative"} and not cancelled
    assert (block is not None) == (blocking and minutes > 0)
    if block is not None:
        assert (block.start, block.end) == (start, end)


# ------------------------------------------------------------------ what decides a block


def test_judge_keeps_what_decides_and_defaults_show_as_to_busy() -> None:
    assert judge("  Quarterly \n review ", "normal", None, is_cancelled=True, is_all_day=True,
                 show_titles=True) == Judged("Quarterly review", "busy", True, True)  # fmt: skip
    assert judge("Quarterly review", None, None, is_cancelled=False, is_all_day=False,
                 show_titles=True).title == BUSY_TITLE  # fmt: skip
    assert judge("Lunch", "private", "free", is_cancelled=False, is_all_day=False,
                 show_titles=True) == Judged(BUSY_TITLE, "free", False, False)  # fmt: skip


@pytest.mark.parametrize("sensitivity", ["normal", "Normal", "NORMAL"])
def test_normal_in_any_case_shows_the_subject(sensitivity: str) -> None:
    assert block_title("Credit committee", sensitivity, True) == "Credit committee"
    assert block_title("Credit committee", sensitivity, False) == BUSY_TITLE


@pytest.mark.parametrize("sensitivity", [None, ""])
def test_a_title_fails_closed_when_the_event_does_not_say_it_is_normal(
    sensitivity: str | None,
) -> None:
    assert block_title("Credit committee", sensitivity, True) == BUSY_TITLE


@pytest.mark.parametrize("sensitivity", ["personal", "Private", "confidential", "unknown", " "])
def test_any_other_sensitivity_shows_busy(sensitivity: str) -> None:
    assert block_title("Credit committee", sensitivity, True) == BUSY_TITLE


def test_a_title_is_cut_at_255_characters_and_an_empty_one_is_busy() -> None:
    assert block_title("T" * 300, "normal", True) == "T" * 255
    assert block_title("T" * 255, "normal", True) == "T" * 255
    assert block_title("T" * 250 + " " * 10 + "U" * 10, "normal", True) == "T" * 250 + " UUUU"
    for empty in (None, "", "  \n\t "):
        assert block_title(empty, "normal", True) == BUSY_TITLE


# ------------------------------------------------------------------ the block itself

EAST = ["Asia/Tokyo", "Pacific/Auckland", "Pacific/Kiritimati", "Asia/Kolkata"]


def test_a_timed_block_is_exactly_the_event_in_utc() -> None:
    start = datetime(2026, 12, 8, 14, 30, tzinfo=UTC)
    judged = judge("Credit committee", "normal", "tentative", is_cancelled=False,
                   is_all_day=False, show_titles=True)  # fmt: skip
    block = block_for(occurrence(start, start + timedelta(minutes=45)), judged, 7, "Asia/Tokyo")
    assert block == AbsenceWrite(
        user_id=7, start=start, end=start + timedelta(minutes=45), all_day=False,
        timezone="Asia/Tokyo", title="Credit committee", notes=None,
        external_id="AAMkAG-event", external_version="ck-1",
    )  # fmt: skip
    assert block.notes is None and block.all_day is False


@pytest.mark.parametrize("zone", [*EAST, "America/Regina", "UTC"])
def test_an_all_day_block_is_midnight_to_midnight_in_the_staff_zone(
    server_zone: str, zone: str
) -> None:
    first = datetime(2026, 12, 7, tzinfo=UTC)  # delta's floating midnight
    judged = judge("Conference", "normal", "oof", is_cancelled=False, is_all_day=True,
                   show_titles=True)  # fmt: skip
    block = block_for(occurrence(first, first + timedelta(days=2)), judged, 7, zone)
    assert block == AbsenceWrite(
        user_id=7, start=datetime(2026, 12, 7, tzinfo=ZoneInfo(zone)),
        end=datetime(2026, 12, 9, tzinfo=ZoneInfo(zone)), all_day=True, timezone=zone,
        title="Conference", notes=None, external_id="AAMkAG-event", external_version="ck-1",
    )  # fmt: skip
    offset = ZoneInfo(zone).utcoffset(datetime(2026, 12, 7))  # noqa: DTZ001
    assert block.start.utcoffset() == block.end.utcoffset() == offset
    assert block.start.replace(tzinfo=None) == datetime(2026, 12, 7)  # noqa: DTZ001
    assert block.end.replace(tzinfo=None) == datetime(2026, 12, 9)  # noqa: DTZ001


@pytest.mark.parametrize(
    ("end", "last"),
    [
        (datetime(2026, 12, 8, tzinfo=UTC), datetime(2026, 12, 8)),  # noqa: DTZ001
        (datetime(2026, 12, 8, 0, 0, 1, tzinfo=UTC), datetime(2026, 12, 9)),  # noqa: DTZ001
        (datetime(2026, 12, 8, 1, tzinfo=UTC), datetime(2026, 12, 9)),  # noqa: DTZ001
        (datetime(2026, 12, 8, 23, 59, tzinfo=UTC), datetime(2026, 12, 9)),  # noqa: DTZ001
        (datetime(2026, 12, 7, 12, tzinfo=UTC), datetime(2026, 12, 8)),  # noqa: DTZ001
    ],
)
def test_an_all_day_end_off_midnight_covers_the_day_it_falls_in(
    server_zone: str, end: datetime, last: datetime
) -> None:
    first = datetime(2026, 12, 7, tzinfo=UTC)
    judged = judge("Off", "normal", "oof", is_cancelled=False, is_all_day=True, show_titles=True)
    block = block_for(occurrence(first, end), judged, 7, "Pacific/Auckland")
    assert block is not None
    assert block.start.replace(tzinfo=None) == datetime(2026, 12, 7)  # noqa: DTZ001
    assert block.end.replace(tzinfo=None) == last


def test_an_all_day_event_with_no_day_makes_no_block() -> None:
    first = datetime(2026, 12, 7, tzinfo=UTC)
    judged = judge("Off", "normal", "oof", is_cancelled=False, is_all_day=True, show_titles=True)
    assert block_for(occurrence(first, first), judged, 7, "Asia/Tokyo") is None
    earlier = first - timedelta(days=1)
    assert block_for(occurrence(first, earlier), judged, 7, "Asia/Tokyo") is None


def test_more_windows_and_iana_zone_names() -> None:
    assert iana_zone("Tokyo Standard Time") == "Asia/Tokyo"
    assert iana_zone("New Zealand Standard Time") == "Pacific/Auckland"
    assert iana_zone("Pacific/Kiritimati") == "Pacific/Kiritimati"
    assert iana_zone("") == "UTC"
    assert iana_zone("../../etc/passwd") == "UTC", "not a zone key: ZoneInfo's ValueError"
    assert iana_zone("/etc/localtime") == "UTC"


# ------------------------------------------------------------------ the sync window

DAY = timedelta(days=1)


def spread(user_id: str) -> timedelta:
    """Where in the (UTC) day a mailbox's window moves: its id's CRC-32 in seconds of a day."""
    return timedelta(seconds=zlib.crc32(user_id.encode()) % 86_400)


def test_a_mailboxs_window_moves_at_its_own_second_of_the_day() -> None:
    midnight = datetime(2027, 1, 10, tzinfo=UTC)
    at = midnight + spread("mailbox-1")  # 13:01:30 UTC for this id
    assert spread("mailbox-1") == timedelta(hours=13, minutes=1, seconds=30)
    for now, anchor in [
        (at, at),  # moves at that very second
        (at + timedelta(seconds=1), at),
        (at + DAY - timedelta(seconds=1), at),
        (at - timedelta(seconds=1), at - DAY),  # not yet today
        (midnight, at - DAY),
        (midnight - timedelta(seconds=1), at - DAY),
    ]:
        window = sync_window("mailbox-1", 30, 90, now.timestamp())
        assert window == (anchor - 30 * DAY, anchor + 90 * DAY), now


def test_a_window_with_a_fractional_now_and_no_past() -> None:
    at = datetime(2027, 1, 10, tzinfo=UTC) + spread("mailbox-1")
    assert sync_window("mailbox-1", 0, 1, at.timestamp() + 0.75) == (at, at + DAY)
    assert sync_window("mailbox-1", 2, 0, at.timestamp() - 0.25) == (at - 3 * DAY, at - DAY)


def test_mailboxes_move_at_different_times() -> None:
    now = datetime(2027, 1, 10, 12, tzinfo=UTC).timestamp()
    anchors = {sync_window(f"user-{n}", 0, 0, now)[0] for n in range(20)}
    assert len(anchors) == 20
    for anchor in anchors:
        assert anchor.tzinfo is not None and anchor.utcoffset() == timedelta(0)
        assert now - 86_400 < anchor.timestamp() <= now


def test_without_now_the_window_is_todays() -> None:
    before = clock.time()
    start, end = sync_window("mailbox-1", 30, 90)
    after = clock.time()
    anchor = start + 30 * DAY
    assert end == anchor + 90 * DAY
    assert before - 86_400 < anchor.timestamp() <= after
    assert (anchor - datetime(2027, 1, 10, tzinfo=UTC)) % DAY == spread("mailbox-1")


@given(
    user_id=st.text(min_size=1, max_size=40),
    now=st.floats(min_value=1.5e9, max_value=2.5e9),
    past=st.integers(0, 60),
    future=st.integers(0, 400),
)
def test_every_window_is_whole_days_around_the_latest_move(
    user_id: str, now: float, past: int, future: int
) -> None:
    start, end = sync_window(user_id, past, future, now)
    anchor = start + past * DAY
    assert end - anchor == future * DAY
    assert now - 86_400 < anchor.timestamp() <= now
    assert (anchor - datetime(1970, 1, 1, tzinfo=UTC)) % DAY == spread(user_id)
