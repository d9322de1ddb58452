"""The Windows time-zone name every event we write carries, for Coconut's IANA zone.

Graph takes any Windows zone name in an event's start and end but only a short list of IANA
names (America/New_York yes, America/Toronto no: 400 TimeZoneNotSupportedException; see
research/graph-reality.md §4), so we never send IANA names. The rule:

1. CLDR's windowsZones table (tzlocal ships it): America/Toronto is "Eastern Standard Time",
   provided that Windows zone keeps the same UTC offsets as the IANA zone over the coming years
   (the table can lag tzdata: tzlocal 5.4.5's still puts America/Scoresbysund in "Azores
   Standard Time", which Greenland left in 2024).
2. Otherwise (an IANA zone CLDR lacks, or a stale entry), a Windows zone with the same offsets
   and the same transitions over those years: same continent first, then the one CLDR puts
   most IANA zones in, then by name.
3. UTC, as a last resort.

A Windows zone's rules are those of its CLDR territory-001 IANA zone ("Eastern Standard Time":
America/New_York), which `rules_zone` names: wall times are written in that zone, so the
instant Graph reads back is ours even for a past date where the two zones' histories differ.

Pure: no I/O beyond reading zoneinfo's data; the answers are cached per process.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from tzlocal.windows_tz import tz_win, win_tz

FALLBACK = "UTC"
YEARS = 3  # compared from January 1st of this year: this year and the two coming ones
STEP = 12 * 3600  # seconds between samples; a change is then found to the minute
_RULES = {**win_tz, FALLBACK: "Etc/UTC"}
_USES = Counter(tz_win.values())  # how many IANA zones CLDR puts in each Windows zone

# One zone's UTC offsets (in seconds) over the compared years: its offset on January 1st, then
# each change as (the first sampled instant with the new offset, the new offset).
Signature = tuple[int, tuple[tuple[int, int], ...]]


def windows_zone(iana: str, year: int | None = None) -> str:
    """The Windows zone name to write for an IANA zone (a Windows name is kept as it is)."""
    if iana in win_tz:
        return iana
    return _windows_zone(iana, year or datetime.now(UTC).year)


def rules_zone(windows: str) -> str:
    """The IANA zone whose rules a Windows zone name stands for (UTC for an unknown name)."""
    return _RULES.get(windows, "Etc/UTC")


@lru_cache(maxsize=1024)
def _windows_zone(iana: str, year: int) -> str:
    wanted = _signature(iana, year)
    if wanted is None:
        return FALLBACK
    listed = tz_win.get(iana)
    if listed is not None and _signature(rules_zone(listed), year) == wanted:
        return listed
    matching = [name for name in _RULES if _same_rules(rules_zone(name), wanted, year)]
    if not matching:
        return FALLBACK
    region = iana.partition("/")[0]
    return min(
        matching,
        key=lambda name: (rules_zone(name).partition("/")[0] != region, -_USES[name], name),
    )


def _same_rules(iana: str, wanted: Signature, year: int) -> bool:
    """Whether a zone's signature is `wanted`; cheap refusals first (most zones differ at one
    of the wanted zone's own instants), the whole signature only for the few left."""
    zone = ZoneInfo(iana)
    first, changes = wanted
    if _offset(zone, _start(year)) != first:
        return False
    if any(_offset(zone, at) != offset for at, offset in changes):
        return False
    return _signature(iana, year) == wanted


@lru_cache(maxsize=1024)
def _signature(iana: str, year: int) -> Signature | None:
    """The zone's offsets over YEARS years from January 1st of `year`; None if it is unknown."""
    try:
        zone = ZoneInfo(iana)
    except (ZoneInfoNotFoundError, ValueError):
        return None
    start, end = _start(year), _start(year + YEARS)
    first = previous = _offset(zone, start)
    changes = []
    for at in range(start + STEP, end + 1, STEP):
        current = _offset(zone, at)
        if current != previous:
            low, high = at - STEP, at  # the change happened in (low, high]
            while high - low > 60:
                middle = (low + high) // 2
                low, high = (middle, high) if _offset(zone, middle) == previous else (low, middle)
            changes.append((high, current))
            previous = current
    return first, tuple(changes)


def _start(year: int) -> int:
    return int(datetime(year, 1, 1, tzinfo=UTC).timestamp())


def _offset(zone: ZoneInfo, at: int) -> int:
    value = datetime.fromtimestamp(at, UTC).astimezone(zone).utcoffset()
    return int(value.total_seconds()) if value is not None else 0
