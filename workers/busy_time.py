"""Which Outlook events become busy time in Coconut, and what the busy block says.

Pure rules, no I/O (DESIGN.md's fourth boundary), following Coconut's own (research/coconut.md
§3.4): busy, oof and tentative block; free, workingElsewhere and unknown do not; zero-length
and cancelled events do not; all-day and multi-day events cover whole days in the staff
member's time zone. A block shows the event's subject only when the admin turned titles on and
the event's sensitivity is normal; private and confidential events never carry subject, body
or location into Coconut, and their subject is never kept anywhere.
"""

from __future__ import annotations

import time as clock
import zlib
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from tzlocal.windows_tz import win_tz

from core.coconut.models import AbsenceWrite

BLOCKING = frozenset({"busy", "oof", "tentative"})
BUSY_TITLE = "Busy"  # Coconut's own label
FALLBACK_ZONE = "UTC"
DAY = 86_400


@dataclass(frozen=True)
class Judged:
    """What decides a block, from the event itself or, for an occurrence, from its master.

    `title` is already the title the block may show, so a private subject never gets this far.
    """

    title: str
    show_as: str
    is_cancelled: bool
    is_all_day: bool


@dataclass(frozen=True)
class Occurrence:
    """One instance in the sync window, as delta gives it (times in UTC)."""

    event_id: str
    version: str  # changeKey, or the etag for a plain occurrence
    start: datetime  # aware; for all-day events midnight of the first day (floating, UTC)
    end: datetime


def judge(
    subject: str | None, sensitivity: str | None, show_as: str | None, *,
    is_cancelled: bool, is_all_day: bool, show_titles: bool,
) -> Judged:  # fmt: skip
    return Judged(
        title=block_title(subject, sensitivity, show_titles),
        show_as=(show_as or "busy"),
        is_cancelled=is_cancelled,
        is_all_day=is_all_day,
    )


def block_title(subject: str | None, sensitivity: str | None, show_titles: bool) -> str:
    """The subject only when allowed and the event says it is normal; else Coconut's "Busy".
    Fails closed: an event that does not say its sensitivity may be private."""
    if not show_titles or (sensitivity or "").lower() != "normal":
        return BUSY_TITLE
    return " ".join((subject or "").split())[:255] or BUSY_TITLE


def blocks(judged: Judged) -> bool:
    return not judged.is_cancelled and judged.show_as in BLOCKING


def block_for(
    occurrence: Occurrence, judged: Judged, staff_id: int, staff_zone: str
) -> AbsenceWrite | None:
    """The external absence this instance should be in Coconut, or None for no block."""
    if not blocks(judged):
        return None
    if judged.is_all_day:
        zone = ZoneInfo(staff_zone)
        first, last = occurrence.start.date(), _day_after(occurrence.end)
        if last <= first:
            return None
        start = datetime.combine(first, time(0), zone)
        end = datetime.combine(last, time(0), zone)
    else:
        start, end = occurrence.start, occurrence.end
    if end <= start:
        return None  # zero-length: Coconut ignores them too
    return AbsenceWrite(
        user_id=staff_id,
        start=start,
        end=end,
        all_day=judged.is_all_day,
        timezone=staff_zone,
        title=judged.title,
        notes=None,  # the description is never copied
        external_id=occurrence.event_id,
        external_version=occurrence.version,
    )


def iana_zone(name: str | None) -> str:
    """An IANA zone for a Windows or IANA zone name; UTC when neither is known."""
    if not name:
        return FALLBACK_ZONE
    if name in win_tz:
        return win_tz[name]
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return FALLBACK_ZONE
    return name


def _day_after(instant: datetime) -> date:
    """An all-day event ends at a floating midnight: that date, whatever zone it came in."""
    value = instant.date()
    return value if instant.time() == time(0) else value + timedelta(days=1)


def sync_window(
    user_id: str, past_days: int, future_days: int, now: float | None = None
) -> tuple[datetime, datetime]:
    """Whole days from the mailbox's own time of day. The window, and with it the delta chain,
    moves once a day; each move is a full round, so every mailbox is reconciled daily, at a
    time spread evenly over the day by its id instead of all of them at midnight."""
    offset = zlib.crc32(user_id.encode()) % DAY
    instant = clock.time() if now is None else now
    anchor = datetime.fromtimestamp((instant - offset) // DAY * DAY + offset, UTC)
    return anchor - timedelta(days=past_days), anchor + timedelta(days=future_days)
