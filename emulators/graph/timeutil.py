"""Time as Graph writes it: UTC instants, Windows or IANA zone names, 7-digit fractions.

Graph stores an instant and answers in UTC unless the caller sends
`Prefer: outlook.timezone="X"`; `dateTime` strings carry no offset and seven fractional digits
(`2026-05-01T14:00:00.0000000`). Callers may send Windows names ("Pacific Standard Time") or IANA
names, and offsets (`Z`, `+00:00`) in their own input.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

WINDOWS_ZONES: dict[str, str] = {
    "UTC": "UTC",
    "Coordinated Universal Time": "UTC",
    "tzone://Microsoft/Utc": "UTC",
    "GMT Standard Time": "Europe/London",
    "Greenwich Standard Time": "Atlantic/Reykjavik",
    "W. Europe Standard Time": "Europe/Berlin",
    "Romance Standard Time": "Europe/Paris",
    "Central Europe Standard Time": "Europe/Budapest",
    "Central European Standard Time": "Europe/Warsaw",
    "E. Europe Standard Time": "Europe/Chisinau",
    "FLE Standard Time": "Europe/Kiev",
    "GTB Standard Time": "Europe/Bucharest",
    "Russian Standard Time": "Europe/Moscow",
    "Eastern Standard Time": "America/New_York",
    "Central Standard Time": "America/Chicago",
    "Mountain Standard Time": "America/Denver",
    "US Mountain Standard Time": "America/Phoenix",
    "Pacific Standard Time": "America/Los_Angeles",
    "Alaskan Standard Time": "America/Anchorage",
    "Hawaiian Standard Time": "Pacific/Honolulu",
    "Atlantic Standard Time": "America/Halifax",
    "Newfoundland Standard Time": "America/St_Johns",
    "Canada Central Standard Time": "America/Regina",
    "SA Pacific Standard Time": "America/Bogota",
    "E. South America Standard Time": "America/Sao_Paulo",
    "India Standard Time": "Asia/Kolkata",
    "China Standard Time": "Asia/Shanghai",
    "Tokyo Standard Time": "Asia/Tokyo",
    "Korea Standard Time": "Asia/Seoul",
    "Singapore Standard Time": "Asia/Singapore",
    "AUS Eastern Standard Time": "Australia/Sydney",
    "New Zealand Standard Time": "Pacific/Auckland",
    "Arabian Standard Time": "Asia/Dubai",
    "Israel Standard Time": "Asia/Jerusalem",
    "South Africa Standard Time": "Africa/Johannesburg",
}

_ZONES_LOWER = {name.lower(): iana for name, iana in WINDOWS_ZONES.items()}
_DT = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,7}))?)?)?"
    r"(Z|[+-]\d{2}:?\d{2})?$"
)


class BadTime(ValueError):
    """A dateTime or time zone Graph would refuse."""


def utcnow() -> datetime:
    return datetime.now(UTC)


def zone(name: str) -> tzinfo:
    """The tzinfo for a Windows or IANA zone name; BadTime if Graph would not know it."""
    iana = _ZONES_LOWER.get(name.strip().lower(), name.strip())
    try:
        return ZoneInfo(iana)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise BadTime(
            f"A valid TimeZone value must be specified. The following TimeZone value is not "
            f"supported: '{name}'."
        ) from exc


def parse_datetime(text: str) -> tuple[datetime, bool]:
    """Parses Graph/ISO input; returns (datetime, has_offset). Naive when no offset was given."""
    m = _DT.match(text.strip())
    if not m:
        raise BadTime(f"Cannot convert the literal '{text}' to the expected type 'Edm.DateTime'.")
    year, month, day, hh, mm, ss, frac, off = m.groups()
    micro = int((frac or "0").ljust(7, "0")[:6])
    try:
        value = datetime(  # noqa: DTZ001 - zone attached below or by the caller
            int(year), int(month), int(day), int(hh or 0), int(mm or 0), int(ss or 0), micro
        )
    except ValueError as exc:
        raise BadTime(f"Cannot convert the literal '{text}' to 'Edm.DateTime'.") from exc
    if off is None:
        return value, False
    if off == "Z":
        return value.replace(tzinfo=UTC), True
    sign = 1 if off[0] == "+" else -1
    digits = off[1:].replace(":", "")
    delta = timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
    return value.replace(tzinfo=UTC) - sign * delta, True


def parse_instant(text: str, zone_name: str = "UTC") -> datetime:
    """An aware UTC instant from a dateTime string, interpreted in zone_name if it has no offset."""
    value, has_offset = parse_datetime(text)
    if not has_offset:
        value = value.replace(tzinfo=zone(zone_name))
    return value.astimezone(UTC)


def format_local(value: datetime) -> str:
    """Graph's offset-less dateTime with seven fractional digits."""
    return value.strftime("%Y-%m-%dT%H:%M:%S.%f") + "0"


def format_utc(value: datetime, fraction: bool = True) -> str:
    """A UTC instant as Graph writes createdDateTime and friends (`…0000000Z`)."""
    value = value.astimezone(UTC)
    if not fraction:
        return value.strftime("%Y-%m-%dT%H:%M:%S")
    return format_local(value) + "Z"


def in_zone(instant: datetime, zone_name: str) -> dict[str, str]:
    """A dateTimeTimeZone object for an instant shown in zone_name."""
    return {"dateTime": format_local(instant.astimezone(zone(zone_name))), "timeZone": zone_name}


def floating_midnight(day: date, zone_name: str) -> dict[str, str]:
    """An all-day boundary: midnight in whatever zone the caller asked for."""
    return {"dateTime": f"{day.isoformat()}T00:00:00.0000000", "timeZone": zone_name}
