"""What a Coconut appointment or absence looks like in a staff member's Outlook calendar.

Pure rules: owner state in, the event we want out. No I/O here (DESIGN.md's fourth boundary),
so every rule is unit-tested fast and the job only decides *where* to write.

What goes into an event is only what the staff member needs: service, customer name, location
and a link back to Coconut. Customers are never attendees (Outlook would invite them), and the
event carries no Coconut notes about the customer beyond what the template shows.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from datetime import datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from jinja2 import StrictUndefined, Template, TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from core.coconut.models import VIDEO, Absence, Appointment, Location
from workers.windows_zones import rules_zone, windows_zone

# Statuses whose event stays in the calendar: a completed or missed appointment still happened
# at that time. A cancelled one is removed (Coconut tells the customer; Outlook should not).
LIVE_STATUSES = {"scheduled", "completed", "no_show"}

DEFAULT_SUBJECT = "{{ service }} with {{ customer }}"
DEFAULT_BODY = """\
<p><b>{{ service }}</b> with {{ customer }}</p>
{% if location %}<p>{{ location }}</p>{% endif %}
{% if meeting_url %}<p><a href="{{ meeting_url }}">Join the video meeting</a></p>{% endif %}
<p><a href="{{ link }}">Open in Coconut</a>{% if code %} · {{ code }}{% endif %}</p>
<p><i>Managed by Coconut: change or cancel this appointment in Coconut, not here.</i></p>
"""

# The body is HTML, so values are escaped there; the subject is plain text and is not. An
# admin's template reaches only the values given: the sandbox refuses `__class__`,
# `__globals__` and their like, through which a template would reach every class in Python.
_html = ImmutableSandboxedEnvironment(
    autoescape=True, undefined=StrictUndefined, keep_trailing_newline=True
)
_text = ImmutableSandboxedEnvironment(autoescape=False, undefined=StrictUndefined)
# Which setting holds each template, for the admin who must correct it.
_SETTING = {False: "EXSYNC_EVENT_SUBJECT_TEMPLATE", True: "EXSYNC_EVENT_BODY_TEMPLATE"}


class TemplateRefused(ValueError):
    """The admin's subject or body template cannot be rendered; the message names the setting."""


@dataclass(frozen=True)
class Templates:
    """The admin's subject and body templates (Jinja2; the body is HTML, autoescaped)."""

    subject: str = DEFAULT_SUBJECT
    body: str = DEFAULT_BODY


@dataclass(frozen=True)
class EventDraft:
    """The event we want in one mailbox, in Graph's terms but free of the SDK."""

    subject: str
    body_html: str
    location: str
    start: str  # local wall time, ISO without offset, in `time_zone`
    end: str
    # A Windows zone name (workers/windows_zones.py): Graph refuses most IANA names on create
    # and update. Part of the digest: the change from IANA names rewrote every event once.
    time_zone: str
    is_all_day: bool = False
    show_as: str = "busy"

    @property
    def digest(self) -> str:
        """A fingerprint of everything we write: unchanged digest, nothing to write."""
        raw = json.dumps(asdict(self), sort_keys=True).encode()
        return hashlib.sha256(raw).hexdigest()[:32]


def is_live(appointment: Appointment | None) -> bool:
    return appointment is not None and appointment.status in LIVE_STATUSES


def appointment_event(
    appointment: Appointment, app_url: str, templates: Templates = Templates()
) -> EventDraft:
    """The event every assigned staff member gets for a live appointment.

    Times are written in the appointment's own zone (the branch's), named as Windows names it,
    so Outlook shows the right instant for a staff member in any zone and keeps it right across
    a DST change.
    """
    values = {
        "service": ", ".join(s.name for s in appointment.services) or "Appointment",
        "customer": customer_names(appointment),
        "location": location_text(appointment.location),
        "meeting_url": _https_only(_video_link(appointment)),
        "link": f"{app_url}/appointments/{appointment.id}",
        "code": appointment.confirmation_code or "",
    }
    subject = _rendered(False, templates.subject, values)
    body = _rendered(True, templates.body, values)
    where = "Video meeting" if _virtual(appointment) else values["location"]
    return EventDraft(
        subject=" ".join(str(subject).split())[:255],
        body_html=str(body),
        location=where,
        start=_wall(appointment.start, appointment.timezone),
        end=_wall(appointment.end, appointment.timezone),
        time_zone=windows_zone(appointment.timezone),
    )


def _video_link(appointment: Appointment) -> str | None:
    """The meeting link, unless Coconut says the customer comes in person or calls: a link
    left over from a video booking changed to in-person would send the staff member online."""
    if appointment.meeting_method not in (None, VIDEO):
        return None
    return appointment.meeting_url


def _rendered(html: bool, source: str, values: dict[str, str]) -> str:
    try:
        return _compiled(html, source).render(values)
    except TemplateError as exc:
        raise TemplateRefused(f"{_SETTING[html]} cannot be used: {exc}") from exc


@lru_cache(maxsize=16)
def _compiled(html: bool, source: str) -> Template:
    """Compiling a template costs more than rendering it, and an initial sync renders the same
    two for every appointment."""
    return (_html if html else _text).from_string(source)


def absence_event(absence: Absence) -> EventDraft | None:
    """The busy event for an away/busy block made in Coconut; None for anything else.

    External absences are the ones this service writes from Exchange: projecting them back
    would echo an Outlook event into a second Outlook event.
    """
    if absence.source != "coconut" or absence.end <= absence.start:
        return None
    if absence.all_day:
        # Graph wants an all-day event to start and end at midnight in the event's own zone.
        zone = ZoneInfo(absence.timezone)
        first = absence.start.astimezone(zone).date()
        last = absence.end.astimezone(zone).date()
        if absence.end.astimezone(zone).time() != time(0) or last == first:
            last += timedelta(days=1)
        start, end = datetime.combine(first, time(0)), datetime.combine(last, time(0))
        return EventDraft(
            subject=absence.title or "Busy",
            body_html="",
            location="",
            start=start.isoformat(),
            end=end.isoformat(),
            time_zone=windows_zone(absence.timezone),
            is_all_day=True,
        )
    return EventDraft(
        subject=absence.title or "Busy",
        body_html="",
        location="",
        start=_wall(absence.start, absence.timezone),
        end=_wall(absence.end, absence.timezone),
        time_zone=windows_zone(absence.timezone),
    )


def customer_names(appointment: Appointment) -> str:
    booked = [a for a in appointment.attendees if a.status != "cancelled"]
    if not booked:
        return "no customer"
    if len(booked) > 3:
        return f"{len(booked)} customers"
    return ", ".join(f"{a.first_name} {a.last_name}".strip() for a in booked)


def location_text(location: Location | None) -> str:
    if location is None:
        return ""
    if location.virtual:
        return location.name
    street = ", ".join(p for p in (location.address, location.city) if p)
    return f"{location.name} ({street})" if street else location.name


def _https_only(url: str | None) -> str:
    """The meeting URL if it is https, else "": it becomes a link in the body, where a
    `javascript:` or `data:` URL from Coconut would run in the staff member's mail client."""
    return url if url and url.lower().startswith("https://") else ""


def _virtual(appointment: Appointment) -> bool:
    return bool(appointment.location and appointment.location.virtual)


def _wall(instant: datetime, zone: str) -> str:
    """The wall time of `instant` in the Windows zone written for the IANA `zone`, by that Windows
    zone's own rules: the instant Graph reads back is this one whatever the two zones' history."""
    ZoneInfo(zone)  # an unknown zone is an error, never a silent UTC
    rules = ZoneInfo(rules_zone(windows_zone(zone)))
    return instant.astimezone(rules).replace(tzinfo=None).isoformat(timespec="seconds")
