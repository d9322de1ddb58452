"""patternedRecurrence: validation and expansion into occurrence dates.

Every pattern Graph has (daily, weekly, absoluteMonthly, relativeMonthly, absoluteYearly,
relativeYearly) and all three range types (endDate, numbered, noEnd). A relative pattern's
`index` (first .. fourth, last) counts the month's days that are any of its `daysOfWeek`.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterator
from datetime import date, timedelta
from typing import Any

from emulators.graph.errors import bad_request

DAYS = ["sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday"]
_PATTERNS = {"daily", "weekly", "absoluteMonthly", "relativeMonthly", "absoluteYearly",
             "relativeYearly"}  # fmt: skip
_INDEXES = ["first", "second", "third", "fourth", "last"]
_RANGES = {"endDate", "numbered", "noEnd"}
MAX_OCCURRENCES = 2000


def _day(value: Any, field: str) -> date:
    try:
        return date.fromisoformat(str(value))
    except ValueError as exc:
        raise bad_request(f"Cannot convert the literal '{value}' to 'Edm.Date' ({field}).") from exc


def normalize(rec: Any, start_day: date, start_zone: str) -> dict[str, Any]:
    """Validates a recurrence body and returns it in Graph's full output shape."""
    if not isinstance(rec, dict) or not isinstance(rec.get("pattern"), dict):
        raise bad_request("Recurrence pattern is required.", "ErrorInvalidRecurrence")
    pattern, rng = rec["pattern"], rec.get("range") or {}
    ptype = pattern.get("type")
    if ptype not in _PATTERNS:
        raise bad_request(f"Invalid recurrence pattern type {ptype!r}.", "ErrorInvalidRecurrence")
    interval = pattern.get("interval", 1)
    if not isinstance(interval, int) or interval < 1:
        raise bad_request(f"Invalid recurrence interval {interval!r}.", "ErrorInvalidRecurrence")
    days = [str(d).lower() for d in pattern.get("daysOfWeek") or []]
    relative = ptype in ("weekly", "relativeMonthly", "relativeYearly")
    if relative and (not days or any(d not in DAYS for d in days)):
        raise bad_request(f"{ptype} recurrence needs valid daysOfWeek.", "ErrorInvalidRecurrence")
    day_of_month = pattern.get("dayOfMonth", 0)
    if ptype in ("absoluteMonthly", "absoluteYearly") and not (
        isinstance(day_of_month, int) and 1 <= day_of_month <= 31
    ):
        raise bad_request(f"{ptype} recurrence needs dayOfMonth 1-31.", "ErrorInvalidRecurrence")
    month = pattern.get("month", 0)
    if ptype.endswith("Yearly") and not (isinstance(month, int) and 1 <= month <= 12):
        raise bad_request(f"{ptype} recurrence needs month 1-12.", "ErrorInvalidRecurrence")
    index = str(pattern.get("index", "first")).lower()
    if index not in _INDEXES:
        raise bad_request(f"Invalid recurrence index {index!r}.", "ErrorInvalidRecurrence")
    rtype = rng.get("type")
    if rtype not in _RANGES:
        raise bad_request(f"Invalid recurrence range type {rtype!r}.", "ErrorInvalidRecurrence")
    range_start = _day(rng.get("startDate", start_day.isoformat()), "range.startDate")
    end_date = "0001-01-01"
    count = 0
    if rtype == "endDate":
        end = _day(rng.get("endDate"), "range.endDate")
        if end < range_start:
            raise bad_request(
                "The recurrence end date is before its start.", "ErrorInvalidRecurrence"
            )
        end_date = end.isoformat()
    if rtype == "numbered":
        count = rng.get("numberOfOccurrences")
        if not isinstance(count, int) or count < 1:
            raise bad_request("numberOfOccurrences must be positive.", "ErrorInvalidRecurrence")
    first_day = str(pattern.get("firstDayOfWeek", "sunday")).lower()
    return {
        "pattern": {
            "type": ptype,
            "interval": interval,
            "month": month if ptype.endswith("Yearly") else 0,
            "dayOfMonth": day_of_month if ptype.startswith("absolute") else 0,
            "daysOfWeek": days,
            "firstDayOfWeek": first_day if first_day in DAYS else "sunday",
            "index": index,
        },
        "range": {
            "type": rtype,
            "startDate": range_start.isoformat(),
            "endDate": end_date,
            "recurrenceTimeZone": rng.get("recurrenceTimeZone") or start_zone,
            "numberOfOccurrences": count,
        },
    }


def _candidates(pattern: dict[str, Any], start: date) -> Iterator[date]:
    interval = pattern["interval"]
    if pattern["type"] == "daily":
        day = start
        while True:
            yield day
            day += timedelta(days=interval)
    elif pattern["type"] == "weekly":
        first = DAYS.index(pattern["firstDayOfWeek"])
        week = start - timedelta(days=(start.isoweekday() % 7 - first) % 7)
        wanted = sorted((DAYS.index(d) - first) % 7 for d in pattern["daysOfWeek"])
        while True:
            for offset in wanted:
                day = week + timedelta(days=offset)
                if day >= start:
                    yield day
            week += timedelta(weeks=interval)
    else:
        yield from _monthly(pattern, start)


def _monthly(pattern: dict[str, Any], start: date) -> Iterator[date]:
    """The monthly and yearly patterns: one day per chosen month, every `interval` of them."""
    yearly = pattern["type"].endswith("Yearly")
    year, month = start.year, pattern["month"] if yearly else start.month
    step = 12 * pattern["interval"] if yearly else pattern["interval"]
    if yearly and month < start.month:
        year += 1
    while True:
        day = _day_in_month(pattern, year, month)
        if day is not None and day >= start:
            yield day
        month += step
        year, month = year + (month - 1) // 12, (month - 1) % 12 + 1


def _day_in_month(pattern: dict[str, Any], year: int, month: int) -> date | None:
    """The pattern's day in that month: its dayOfMonth (None when the month is shorter), or
    the index-th of the month's days that are any of its daysOfWeek."""
    length = calendar.monthrange(year, month)[1]
    if pattern["type"].startswith("absolute"):
        wanted = pattern["dayOfMonth"]
        return date(year, month, wanted) if wanted <= length else None
    matching = [
        date(year, month, n) for n in range(1, length + 1)
        if DAYS[date(year, month, n).isoweekday() % 7] in pattern["daysOfWeek"]
    ]  # fmt: skip
    position = _INDEXES.index(pattern["index"])
    return matching[-1] if position == len(_INDEXES) - 1 else matching[position]


def occurrence_dates(rec: dict[str, Any], until: date) -> Iterator[date]:
    """Pattern dates from the range start up to `until` (inclusive), honouring the range."""
    rng = rec["range"]
    end = date.fromisoformat(rng["endDate"]) if rng["type"] == "endDate" else None
    limit = rng["numberOfOccurrences"] if rng["type"] == "numbered" else MAX_OCCURRENCES
    for n, day in enumerate(_candidates(rec["pattern"], date.fromisoformat(rng["startDate"]))):
        if n >= limit or day > until or (end is not None and day > end):
            return
        yield day
