"""Time as Graph writes it: UTC instants, Windows or IANA zone names, 7-digit fractions.

Graph stores an instant and answers in UTC unless the caller sends
`Prefer: outlook.timezone="X"`; `dateTime` strings carry no offset and seven fractional digits
(`2026-05-01T14:00:00.0000000`). Callers may send offsets (`Z`, `+00:00`) in their own input, and
zone names: an event's start and end on create or update take any Windows name ("Pacific
Standard Time", CLDR's windowsZones table) but only the IANA names Graph's dateTimeTimeZone page
lists (America/New_York yes, America/Toronto no: 400 TimeZoneNotSupportedException); what the
emulator only interprets (`Prefer: outlook.timezone`, a mailbox's zone) may be any known zone.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from tzlocal.windows_tz import win_tz

# Every Windows zone name, from CLDR's windowsZones table (each name's territory-001 IANA zone
# carries its rules), plus the UTC aliases Graph also writes.
WINDOWS_ZONES: dict[str, str] = {
    **win_tz,
    "UTC": "UTC",
    "Coordinated Universal Time": "UTC",
    "tzone://Microsoft/Utc": "UTC",
}

# The IANA names Graph's v1.0 dateTimeTimeZone page lists under "Additional time zones": the
# only IANA names an event's start and end may carry on create or update. Where the page gives
# two spellings ("Europe/Kyiv (Kiev)", "Asia/Toshkent (Tashkent)") both are here; the ones
# zoneinfo does not know (Asia/Toshkent, Asia/Astana) are refused anyway when interpreted.
GRAPH_IANA_ZONES: frozenset[str] = frozenset({
    "Etc/GMT+12", "Etc/GMT+11", "Pacific/Honolulu", "America/Anchorage", "America/Santa_Isabel",
    "America/Los_Angeles", "America/Phoenix", "America/Chihuahua", "America/Denver",
    "America/Guatemala", "America/Chicago", "America/Mexico_City", "America/Regina",
    "America/Bogota", "America/New_York", "America/Indiana/Indianapolis", "America/Caracas",
    "America/Asuncion", "America/Halifax", "America/Cuiaba", "America/La_Paz",
    "America/Santiago", "America/St_Johns", "America/Sao_Paulo",
    "America/Argentina/Buenos_Aires", "America/Cayenne", "America/Godthab",
    "America/Montevideo", "America/Bahia", "Etc/GMT+2", "Atlantic/Azores",
    "Atlantic/Cape_Verde", "Africa/Casablanca", "Etc/GMT", "Europe/London", "Atlantic/Reykjavik",
    "Europe/Berlin", "Europe/Budapest", "Europe/Paris", "Europe/Warsaw", "Africa/Lagos",
    "Africa/Windhoek", "Europe/Bucharest", "Asia/Beirut", "Africa/Cairo", "Asia/Damascus",
    "Africa/Johannesburg", "Europe/Kyiv", "Europe/Kiev", "Europe/Istanbul", "Asia/Jerusalem",
    "Asia/Amman", "Asia/Baghdad", "Europe/Kaliningrad", "Asia/Riyadh", "Africa/Nairobi",
    "Asia/Tehran", "Asia/Dubai", "Asia/Baku", "Europe/Moscow", "Indian/Mauritius",
    "Asia/Tbilisi", "Asia/Yerevan", "Asia/Kabul", "Asia/Karachi", "Asia/Toshkent",
    "Asia/Tashkent", "Asia/Kolkata", "Asia/Colombo", "Asia/Kathmandu", "Asia/Astana",
    "Asia/Almaty", "Asia/Dhaka", "Asia/Yekaterinburg", "Asia/Yangon", "Asia/Rangoon",
    "Asia/Bangkok", "Asia/Novosibirsk", "Asia/Shanghai", "Asia/Krasnoyarsk", "Asia/Singapore",
    "Australia/Perth", "Asia/Taipei", "Asia/Ulaanbaatar", "Asia/Irkutsk", "Asia/Tokyo",
    "Asia/Seoul", "Australia/Adelaide", "Australia/Darwin", "Australia/Brisbane",
    "Australia/Sydney", "Pacific/Port_Moresby", "Australia/Hobart", "Asia/Yakutsk",
    "Pacific/Guadalcanal", "Asia/Vladivostok", "Pacific/Auckland", "Etc/GMT-12", "Pacific/Fiji",
    "Asia/Magadan", "Pacific/Tongatapu", "Pacific/Apia", "Pacific/Kiritimati",
})  # fmt: skip

_ZONES_LOWER = {name.lower(): iana for name, iana in WINDOWS_ZONES.items()}
_GRAPH_IANA_LOWER = {name.lower(): name for name in GRAPH_IANA_ZONES}
_DT = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,7}))?)?)?"
    r"(Z|[+-]\d{2}:?\d{2})?$"
)


class BadTime(ValueError):
    """A dateTime or time zone Graph would refuse."""


def utcnow() -> datetime:
    return datetime.now(UTC)


def _unsupported(name: str) -> BadTime:
    return BadTime(
        f"A valid TimeZone value must be specified. The following TimeZone value is not "
        f"supported: '{name}'."
    )


def zone(name: str) -> tzinfo:
    """The tzinfo for a Windows or IANA zone name; BadTime if Graph would not know it.

    What the emulator interprets (a `Prefer: outlook.timezone`, a mailbox's zone, a stored
    event's) may name any zone; what an event write may name is `event_zone`'s narrower set.
    """
    key = name.strip().lower()
    iana = _ZONES_LOWER.get(key) or _GRAPH_IANA_LOWER.get(key) or name.strip()
    try:
        return ZoneInfo(iana)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise _unsupported(name) from exc


def event_zone(name: str) -> tzinfo:
    """The tzinfo for an event's start or end zone on create or update, as Graph accepts it:
    any Windows zone name, or one of the IANA names of GRAPH_IANA_ZONES; BadTime otherwise
    (Graph answers 400 TimeZoneNotSupportedException, e.g. for "America/Toronto")."""
    key = name.strip().lower()
    if key not in _ZONES_LOWER and key not in _GRAPH_IANA_LOWER:
        raise _unsupported(name)
    return zone(name)


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
