"""Every event we write names its zone as Graph takes it: a Windows name, with the IANA zone's
offsets (workers/windows_zones.py; research/graph-reality.md §4)."""

from __future__ import annotations

import zoneinfo
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from emulators.graph.timeutil import WINDOWS_ZONES, event_zone
from tests.test_projection_rules import appointment
from workers.projection import appointment_event
from workers.windows_zones import rules_zone, windows_zone

THIS_YEAR = datetime.now(UTC).year
# Two years from January, twice a month: winter and summer, and the weeks between the North
# American and the European DST switches (mid-March, early November).
INSTANTS = [
    datetime(THIS_YEAR + year, month, day, 12, tzinfo=UTC)
    for year in (0, 1)
    for month in range(1, 13)
    for day in (1, 15)
]
AMERICAS_AND_EUROPE = sorted(
    name for name in zoneinfo.available_timezones() if name.startswith(("America/", "Europe/"))
)


@pytest.mark.parametrize("iana", AMERICAS_AND_EUROPE)
def test_every_zone_of_the_americas_and_europe_has_a_windows_name_with_its_offsets(
    iana: str,
) -> None:
    windows = windows_zone(iana)
    assert windows in WINDOWS_ZONES, f"{iana} -> {windows}: not a Windows name"
    written = event_zone(windows)  # what the emulator, as Graph, reads the name as
    own = ZoneInfo(iana)
    for instant in INSTANTS:
        assert instant.astimezone(written).utcoffset() == instant.astimezone(own).utcoffset(), (
            f"{iana} -> {windows} at {instant:%Y-%m-%d}"
        )


def test_cldrs_names_where_they_are_right_and_a_match_where_cldr_lags() -> None:
    assert windows_zone("America/Toronto") == "Eastern Standard Time"
    assert windows_zone("America/Regina") == "Canada Central Standard Time"
    assert windows_zone("Europe/Amsterdam") == "W. Europe Standard Time"
    assert windows_zone("Europe/London") == "GMT Standard Time"
    assert windows_zone("UTC") == windows_zone("Etc/UTC") == "UTC"
    # CLDR lacks these two (links to Europe/Kyiv since tzdata 2022)...
    assert (
        windows_zone("Europe/Uzhgorod") == windows_zone("Europe/Zaporozhye") == "FLE Standard Time"
    )
    # ... and still puts Scoresbysund with the Azores, which Greenland left in 2024.
    assert windows_zone("America/Scoresbysund") == "Greenland Standard Time"
    assert windows_zone("Eastern Standard Time") == "Eastern Standard Time", "kept as it is"
    assert rules_zone("Eastern Standard Time") == "America/New_York"
    assert windows_zone("Mars/Olympus") == "UTC"


def test_a_zone_no_windows_zone_follows_falls_back_to_utc_and_keeps_the_instant() -> None:
    """Antarctica/Troll (UTC+0, UTC+2 in summer) has no Windows zone: written in UTC, its wall
    time is UTC's, so Outlook still shows the right instant."""
    assert windows_zone("Antarctica/Troll") == "UTC"
    start = datetime(THIS_YEAR, 7, 1, 10, tzinfo=ZoneInfo("Antarctica/Troll"))  # 08:00 UTC
    draft = appointment_event(appointment(start=start, timezone="Antarctica/Troll"), "https://x")
    assert (draft.start, draft.time_zone) == (f"{THIS_YEAR}-07-01T08:00:00", "UTC")


def test_an_unknown_coconut_zone_is_still_an_error() -> None:
    with pytest.raises(zoneinfo.ZoneInfoNotFoundError):
        appointment_event(appointment(timezone="Mars/Olympus"), "https://x")
