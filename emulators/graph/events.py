"""Outlook events: validation of writes, recurrence expansion and Graph's JSON rendering.

One stored `Event` is a single instance or a series master; occurrences and exceptions are
derived from the master (exceptions keep their overrides on it, deleted occurrences their
dates), so a calendarView, a delta round and a GET by occurrence id all agree.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from emulators.graph import ids, recurrence
from emulators.graph.errors import bad_request
from emulators.graph.timeutil import (
    BadTime,
    event_zone,
    format_utc,
    in_zone,
    parse_datetime,
    zone,
)

ENUMS = {
    "sensitivity": ("normal", "personal", "private", "confidential"),
    "showAs": ("free", "tentative", "busy", "oof", "workingElsewhere", "unknown"),
    "importance": ("low", "normal", "high"),
}
# Plain properties a client may write, with the JSON type Graph expects.
SIMPLE = {
    "subject": str,
    "sensitivity": str,
    "showAs": str,
    "importance": str,
    "categories": list,
    "location": dict,
    "locations": list,
    "attendees": list,
    "isReminderOn": bool,
    "reminderMinutesBeforeStart": int,
    "responseRequested": bool,
    "isOnlineMeeting": bool,
    "allowNewTimeProposals": bool,
    "hideAttendees": bool,
}
# Read-only properties Graph accepts in a body and ignores.
IGNORED = {
    "@odata.type",
    "@odata.etag",
    "@odata.context",
    "id",
    "changeKey",
    "createdDateTime",
    "lastModifiedDateTime",
    "iCalUId",
    "type",
    "seriesMasterId",
    "originalStart",
    "isOrganizer",
    "webLink",
    "bodyPreview",
    "hasAttachments",
    "responseStatus",
    "isDraft",
    "organizer",
    "originalStartTimeZone",
    "originalEndTimeZone",
    "onlineMeeting",
    "isCancelled",
}
EXT_ID = re.compile(
    r"^(String|Integer|Boolean|SystemTime|Double|Long|Binary|Guid)\s+"
    r"\{[0-9a-fA-F-]{36}\}\s+(Name\s+\S.*|Id\s+0x[0-9a-fA-F]+)$"
)
DEFAULTS: dict[str, Any] = {
    "subject": "",
    "sensitivity": "normal",
    "showAs": "busy",
    "importance": "normal",
    "categories": [],
    "isReminderOn": True,
    "reminderMinutesBeforeStart": 15,
    "responseRequested": True,
    "isOnlineMeeting": False,
    "allowNewTimeProposals": True,
    "hideAttendees": False,
    "isCancelled": False,
    "attendees": [],
    "locations": [],
}


@dataclass
class Override:
    """An exception: what one occurrence of a series changed, plus its own version."""

    props: dict[str, Any]
    start: datetime
    end: datetime
    change_key: str
    modified: datetime


@dataclass
class Event:
    """A stored single instance or series master in one mailbox's primary calendar."""

    id: str
    mailbox: str
    owner_name: str
    owner_upn: str
    props: dict[str, Any]
    body: dict[str, str]
    start: datetime
    end: datetime
    start_zone: str
    end_zone: str
    all_day: bool
    recurrence: dict[str, Any] | None
    transaction_id: str | None
    ext: dict[str, tuple[str, str]]
    ical_uid: str
    change_key: str
    created: datetime
    modified: datetime
    created_seq: int = 0
    changed_seq: int = 0
    exceptions: dict[date, Override] = field(default_factory=dict)
    cancelled: set[date] = field(default_factory=set)


@dataclass(frozen=True)
class Instance:
    """What a calendarView shows: a single instance, a master, an occurrence or an exception."""

    id: str
    type: str
    event: Event
    start: datetime
    end: datetime
    day: date | None = None
    override: Override | None = None


def _bad_type(name: str, value: Any) -> Exception:
    return bad_request(
        f"Cannot convert the literal '{value}' to the expected type of property '{name}'.",
        "RequestBodyRead",
    )


def _time(value: Any, name: str) -> tuple[datetime, str, bool]:
    """(UTC instant, zone name, was midnight local) from a dateTimeTimeZone body."""
    if not isinstance(value, dict) or not isinstance(value.get("dateTime"), str):
        raise _bad_type(name, value)
    zone_name = value.get("timeZone") or "UTC"
    if not isinstance(zone_name, str):
        raise _bad_type(f"{name}.timeZone", zone_name)
    try:
        local, has_offset = parse_datetime(value["dateTime"])
        tz = event_zone(zone_name)  # Graph's narrower set: most IANA names are refused
    except BadTime as exc:
        code = "TimeZoneNotSupportedException" if "TimeZone" in str(exc) else "RequestBodyRead"
        raise bad_request(str(exc), code) from exc
    if has_offset:
        instant = local.astimezone(UTC)
        local = instant.astimezone(tz).replace(tzinfo=None)
    else:
        instant = local.replace(tzinfo=tz).astimezone(UTC)
    midnight = local.hour == local.minute == local.second == local.microsecond == 0
    return instant, zone_name, midnight


def validate_ext(value: Any) -> dict[str, tuple[str, str]]:
    """Single-value extended properties keyed by lower-case id."""
    if not isinstance(value, list):
        raise _bad_type("singleValueExtendedProperties", value)
    out = {}
    for prop in value:
        if not isinstance(prop, dict) or not isinstance(prop.get("id"), str):
            raise _bad_type("singleValueExtendedProperties", prop)
        if not EXT_ID.match(prop["id"].strip()):
            raise bad_request(
                f"The extended property id '{prop['id']}' is not valid.",
                "ErrorInvalidExtendedPropertyValue",
            )
        if not isinstance(prop.get("value"), str):
            raise bad_request(
                "The extended property value must be a string.", "ErrorInvalidExtendedPropertyValue"
            )
        out[prop["id"].strip().lower()] = (prop["id"].strip(), prop["value"])
    return out


def _props(body: dict[str, Any], privileged: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in body.items():
        if name in SIMPLE:
            if not isinstance(value, SIMPLE[name]) or isinstance(value, bool) != (
                SIMPLE[name] is bool
            ):
                raise _bad_type(name, value)
            if name in ENUMS and value not in ENUMS[name]:
                raise bad_request(
                    f"Cannot convert the literal '{value}' to the expected type "
                    f"'microsoft.graph.{name}'.",
                    "RequestBodyRead",
                )
            out[name] = value
        elif name == "isCancelled" and privileged:
            if not isinstance(value, bool):
                raise _bad_type(name, value)
            out[name] = value
    if "attendees" in out:
        out["attendees"] = [_attendee(a) for a in out["attendees"]]
    return out


def _attendee(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict) or not isinstance(value.get("emailAddress"), dict):
        raise _bad_type("attendees", value)
    return {
        "type": value.get("type", "required"),
        "status": {"response": "none", "time": "0001-01-01T00:00:00Z"},
        "emailAddress": {
            "name": value["emailAddress"].get("name") or value["emailAddress"].get("address", ""),
            "address": value["emailAddress"].get("address", ""),
        },
    }


def _body(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        raise _bad_type("body", value)
    kind = str(value.get("contentType", "text")).lower()
    if kind not in ("text", "html"):
        raise _bad_type("body.contentType", kind)
    return {"contentType": kind, "content": str(value.get("content") or "")}


def check_keys(body: dict[str, Any]) -> None:
    """Refuses properties the event type does not have, as Graph's OData reader does."""
    allowed = (
        set(SIMPLE)
        | IGNORED
        | {
            "body",
            "start",
            "end",
            "isAllDay",
            "recurrence",
            "transactionId",
            "singleValueExtendedProperties",
        }
    )
    for name in body:
        if name not in allowed and not name.startswith("@"):
            raise bad_request(
                f"The property '{name}' does not exist on type 'microsoft.graph.event'. Make sure "
                "to only use property names that are defined by the type or mark the type as open "
                "type.",
                "RequestBodyRead",
            )


def _check_times(
    start: datetime, end: datetime, all_day: bool, midnights: bool, zones: tuple[str, str]
) -> None:
    if end < start:
        raise bad_request(
            "The end time of the event must be on or after its start time.", "ErrorInvalidRequest"
        )
    if all_day and (not midnights or zones[0] != zones[1] or end == start):
        raise bad_request(
            "Your request can't be completed. If the event is an all-day event, its start and "
            "end must be set to midnight in the same time zone and span whole days.",
            "ErrorInvalidRequest",
        )


def new_event(
    mailbox: str,
    owner_name: str,
    owner_upn: str,
    body: dict[str, Any],
    now: datetime,
    privileged: bool = False,
) -> Event:
    """Builds a validated event from a POST body; raises GraphError(400) on bad input."""
    check_keys(body)
    if "start" not in body or "end" not in body:
        raise bad_request("An event must have a start and an end.", "ErrorInvalidRequest")
    start, start_zone, m1 = _time(body["start"], "start")
    end, end_zone, m2 = _time(body["end"], "end")
    all_day = body.get("isAllDay", False)
    if not isinstance(all_day, bool):
        raise _bad_type("isAllDay", all_day)
    _check_times(start, end, all_day, m1 and m2, (start_zone, end_zone))
    tx = body.get("transactionId")
    if tx is not None and not isinstance(tx, str):
        raise _bad_type("transactionId", tx)
    event = Event(
        id=ids.new_event_id(),
        mailbox=mailbox,
        owner_name=owner_name,
        owner_upn=owner_upn,
        props={**DEFAULTS, **_props(body, privileged)},
        body=_body(body.get("body", {"contentType": "text", "content": ""})),
        start=start,
        end=end,
        start_zone=start_zone,
        end_zone=end_zone,
        all_day=all_day,
        recurrence=None,
        transaction_id=tx,
        ext=validate_ext(body.get("singleValueExtendedProperties", [])),
        ical_uid=ids.ical_uid(),
        change_key=ids.change_key(),
        created=now,
        modified=now,
    )
    if body.get("recurrence") is not None:
        local_day = start.astimezone(zone(start_zone)).date()
        event.recurrence = recurrence.normalize(body["recurrence"], local_day, start_zone)
    return event


def patch_event(
    event: Event, body: dict[str, Any], now: datetime, privileged: bool = False
) -> None:
    """Applies a PATCH body to a stored event (validated first, applied all-or-nothing)."""
    check_keys(body)
    if "transactionId" in body and body["transactionId"] != event.transaction_id:
        raise bad_request("The transactionId of an event cannot be changed.", "ErrorInvalidRequest")
    props = _props(body, privileged)
    start, start_zone, m1 = event.start, event.start_zone, True
    end, end_zone, m2 = event.end, event.end_zone, True
    if "start" in body:
        start, start_zone, m1 = _time(body["start"], "start")
    if "end" in body:
        end, end_zone, m2 = _time(body["end"], "end")
    all_day = body.get("isAllDay", event.all_day)
    if not isinstance(all_day, bool):
        raise _bad_type("isAllDay", all_day)
    if all_day and ("start" not in body or "end" not in body):
        m1 = m1 and _is_local_midnight(start, start_zone)
        m2 = m2 and _is_local_midnight(end, end_zone)
    _check_times(start, end, all_day, m1 and m2, (start_zone, end_zone))
    new_body = _body(body["body"]) if "body" in body else event.body
    ext = {**event.ext, **validate_ext(body.get("singleValueExtendedProperties", []))}
    rec = event.recurrence
    if "recurrence" in body:
        rec = None
        if body["recurrence"] is not None:
            local_day = start.astimezone(zone(start_zone)).date()
            rec = recurrence.normalize(body["recurrence"], local_day, start_zone)
    if rec != event.recurrence or (rec and (start, end) != (event.start, event.end)):
        # Outlook drops a series' exceptions and deletions when its pattern or times change.
        event.exceptions.clear()
        event.cancelled.clear()
    event.props.update(props)
    event.body = new_body
    event.start, event.end, event.start_zone, event.end_zone = start, end, start_zone, end_zone
    event.all_day, event.ext, event.recurrence = all_day, ext, rec
    touch(event, now)


def _is_local_midnight(instant: datetime, zone_name: str) -> bool:
    local = instant.astimezone(zone(zone_name))
    return local.hour == local.minute == local.second == 0


def touch(event: Event, now: datetime) -> None:
    """Marks a write: Graph gives every change a new changeKey and lastModifiedDateTime."""
    event.change_key = ids.change_key()
    event.modified = now


def patch_occurrence(event: Event, day: date, body: dict[str, Any], now: datetime) -> Override:
    """Turns one occurrence into an exception (or updates one) with the PATCH body."""
    check_keys(body)
    for name in ("recurrence", "transactionId", "singleValueExtendedProperties", "isAllDay"):
        if name in body:
            raise bad_request(
                f"'{name}' cannot be changed on an occurrence.", "ErrorInvalidRequest"
            )
    current = event.exceptions.get(day)
    start, end = current_times(event, day, current)
    start_zone, end_zone = event.start_zone, event.end_zone
    if "start" in body:
        start, start_zone, _ = _time(body["start"], "start")
    if "end" in body:
        end, end_zone, _ = _time(body["end"], "end")
    _check_times(start, end, False, True, (start_zone, end_zone))
    props = {**(current.props if current else {}), **_props(body, False)}
    if "body" in body:
        props["body"] = _body(body["body"])
    override = Override(props, start, end, ids.change_key(), now)
    event.exceptions[day] = override
    touch(event, now)
    return override


def current_times(event: Event, day: date, override: Override | None) -> tuple[datetime, datetime]:
    """Start and end of the occurrence originally on `day` (its exception's, if any)."""
    if override is not None:
        return override.start, override.end
    return pattern_times(event, day)


def pattern_times(event: Event, day: date) -> tuple[datetime, datetime]:
    """Where the pattern puts the occurrence of `day`: the master's local time on that date."""
    tz = zone(event.start_zone)
    local = event.start.astimezone(tz)
    start = datetime.combine(day, local.timetz().replace(tzinfo=None)).replace(tzinfo=tz)
    return start.astimezone(UTC), start.astimezone(UTC) + (event.end - event.start)


def instances(event: Event, win_start: datetime, win_end: datetime) -> list[Instance]:
    """The instances of `event` that overlap [win_start, win_end), masters excluded."""
    if event.recurrence is None:
        if _overlaps(event.start, event.end, win_start, win_end):
            return [Instance(event.id, "singleInstance", event, event.start, event.end)]
        return []
    until = (win_end + timedelta(days=2)).astimezone(zone(event.start_zone)).date()
    out = []
    for day in recurrence.occurrence_dates(event.recurrence, until):
        if day in event.cancelled:
            continue
        override = event.exceptions.get(day)
        start, end = current_times(event, day, override)
        if _overlaps(start, end, win_start, win_end):
            kind = "exception" if override else "occurrence"
            out.append(
                Instance(ids.occurrence_id(event.id, day), kind, event, start, end, day, override)
            )
    return out


def occurrence(event: Event, day: date) -> Instance | None:
    """The occurrence or exception of `event` originally on `day`, if it exists."""
    if event.recurrence is None or day in event.cancelled:
        return None
    if day not in recurrence.occurrence_dates(event.recurrence, day):
        return None
    override = event.exceptions.get(day)
    start, end = current_times(event, day, override)
    kind = "exception" if override else "occurrence"
    return Instance(ids.occurrence_id(event.id, day), kind, event, start, end, day, override)


def master_instance(event: Event) -> Instance:
    """The event itself as an item (singleInstance or seriesMaster)."""
    kind = "seriesMaster" if event.recurrence else "singleInstance"
    return Instance(event.id, kind, event, event.start, event.end)


def _overlaps(start: datetime, end: datetime, win_start: datetime, win_end: datetime) -> bool:
    if start == end:
        return win_start <= start < win_end
    return start < win_end and end > win_start


def _html(text: str) -> str:
    return (
        '<html>\r\n<head>\r\n<meta http-equiv="Content-Type" content="text/html; charset=utf-8">'
        f"\r\n</head>\r\n<body>\r\n<div>{html.escape(text)}</div>\r\n</body>\r\n</html>\r\n"
    )


def _text(markup: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", markup)).strip()


def render_body(body: dict[str, str], want: str | None) -> dict[str, str]:
    """Graph answers bodies as HTML unless the caller prefers text."""
    if want == "text":
        text = body["content"] if body["contentType"] == "text" else _text(body["content"])
        return {"contentType": "text", "content": text}
    content = body["content"] if body["contentType"] == "html" else _html(body["content"])
    return {"contentType": "html", "content": content}


def _when(event: Event, instant: datetime, tz_name: str) -> dict[str, str]:
    if event.all_day:
        day = instant.astimezone(zone(event.start_zone)).date()
        return {"dateTime": f"{day.isoformat()}T00:00:00.0000000", "timeZone": tz_name}
    return in_zone(instant, tz_name)


def etag(change_key: str) -> str:
    return f'W/"{change_key}"'


def render(
    inst: Instance, tz_name: str, base: str, body_type: str | None = None, stingy: bool = False
) -> dict[str, Any]:
    """Graph's JSON for an instance; `stingy` gives the delta form of a plain occurrence."""
    event, override = inst.event, inst.override
    key = override.change_key if override else event.change_key
    start, end = _when(event, inst.start, tz_name), _when(event, inst.end, tz_name)
    if stingy and inst.type == "occurrence":
        return {
            "@odata.type": "#microsoft.graph.event",
            "@odata.etag": etag(key),
            "id": inst.id,
            "type": "occurrence",
            "seriesMasterId": event.id,
            "start": start,
            "end": end,
        }
    props = {**event.props, **(override.props if override else {})}
    body = props.pop("body", event.body)
    text = body["content"] if body["contentType"] == "text" else _text(body["content"])
    ical = event.ical_uid if inst.day is None else event.ical_uid[:-8] + inst.day.strftime("%Y%m%d")
    location = props.pop("location", None) or {
        "displayName": "",
        "locationType": "default",
        "uniqueIdType": "unknown",
        "address": {},
        "coordinates": {},
    }
    out: dict[str, Any] = {
        "@odata.etag": etag(key),
        "id": inst.id,
        "createdDateTime": format_utc(event.created),
        "lastModifiedDateTime": format_utc(override.modified if override else event.modified),
        "changeKey": key,
        "categories": props.pop("categories"),
        "transactionId": event.transaction_id,
        "originalStartTimeZone": event.start_zone,
        "originalEndTimeZone": event.end_zone,
        "iCalUId": ical,
        "uid": event.ical_uid,
        "reminderMinutesBeforeStart": props.pop("reminderMinutesBeforeStart"),
        "isReminderOn": props.pop("isReminderOn"),
        "hasAttachments": False,
        "subject": props.pop("subject"),
        "bodyPreview": text[:255],
        "importance": props.pop("importance"),
        "sensitivity": props.pop("sensitivity"),
        "isAllDay": event.all_day,
        "isCancelled": props.pop("isCancelled"),
        "isOrganizer": True,
        "responseRequested": props.pop("responseRequested"),
        "seriesMasterId": event.id if inst.day is not None else None,
        "showAs": props.pop("showAs"),
        "type": inst.type,
        "webLink": f"{base}/owa/?itemid={inst.id}&exvsurl=1&path=/calendar/item",
        "onlineMeetingUrl": None,
        "isOnlineMeeting": props.pop("isOnlineMeeting"),
        "onlineMeetingProvider": "unknown",
        "allowNewTimeProposals": props.pop("allowNewTimeProposals"),
        "isDraft": False,
        "hideAttendees": props.pop("hideAttendees"),
        "responseStatus": {"response": "organizer", "time": "0001-01-01T00:00:00Z"},
        "body": render_body(body, body_type),
        "start": start,
        "end": end,
        "location": location,
        "locations": props.pop("locations"),
        "recurrence": event.recurrence if inst.type == "seriesMaster" else None,
        "attendees": props.pop("attendees"),
        "organizer": {"emailAddress": {"name": event.owner_name, "address": event.owner_upn}},
        "onlineMeeting": None,
    }
    if inst.day is not None:
        out["originalStart"] = format_utc(pattern_times(event, inst.day)[0], fraction=False) + "Z"
    return out
