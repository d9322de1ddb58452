"""The pure rules that turn an Outlook event into a Coconut busy block (workers.busy_time):
which events block, what the block says, and that a private subject never gets through."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from hypothesis import given
from hypothesis import strategies as st

from workers.busy_time import BUSY_TITLE, Occurrence, block_for, block_title, iana_zone, judge

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
    normal = (sensitivity or "normal") == "normal"
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
