"""The pure rules that turn a Coconut appointment or absence into the event we want in Outlook."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from hypothesis import given
from hypothesis import strategies as st

from core.coconut import Absence, Appointment, Attendee, Location, Service
from workers.projection import Templates, absence_event, appointment_event, is_live

APP = "https://bank.coconutcalendar.com"
TORONTO = Location(
    1, "Main Street Branch", "1 Main St", "Toronto", "ON", "CA", "M1M", "America/Toronto", False
)
VIRTUAL = replace(TORONTO, id=3, name="Virtual Branch", virtual=True)
START = datetime(2030, 3, 8, 15, 0, tzinfo=UTC)  # 10:00 in Toronto, the Friday before DST


def appointment(**changes: object) -> Appointment:
    base = Appointment(
        id=42, status="scheduled", start=START, end=START + timedelta(hours=1),
        timezone="America/Toronto", staff_id=1, additional_staff_ids=(), location=TORONTO,
        services=(Service(1, "Mortgage consultation", 60),),
        attendees=(Attendee(7, "Jane", "Doe", "booked"),), notes="private note about income",
        meeting_url=None, confirmation_code="ABC123", version=1, updated_at=START,
    )  # fmt: skip
    return replace(base, **changes)  # type: ignore[arg-type]


def absence(**changes: object) -> Absence:
    base = Absence(
        id=5, user_id=1, start=START, end=START + timedelta(hours=2), all_day=False,
        timezone="America/Regina", title="Branch huddle", notes=None, source="coconut",
        external_provider=None, external_id=None, external_version=None, version=1,
        updated_at=START,
    )  # fmt: skip
    return replace(base, **changes)  # type: ignore[arg-type]


def test_an_appointment_is_written_in_its_own_zone_with_a_link_back() -> None:
    draft = appointment_event(appointment(), APP)
    assert (draft.start, draft.end, draft.time_zone) == (
        "2030-03-08T10:00:00", "2030-03-08T11:00:00", "America/Toronto",
    )  # fmt: skip
    assert draft.subject == "Mortgage consultation with Jane Doe"
    assert f"{APP}/appointments/42" in draft.body_html
    assert draft.location == "Main Street Branch (1 Main St, Toronto)"
    assert "income" not in draft.body_html, "Coconut notes are not copied to Outlook"


def test_across_the_dst_switch_the_wall_time_is_kept() -> None:
    monday = appointment(start=START + timedelta(days=3) - timedelta(hours=1))  # 10:00 EDT
    assert appointment_event(monday, APP).start == "2030-03-11T10:00:00"


def test_virtual_group_and_cancelled_attendees() -> None:
    many = tuple(Attendee(n, f"C{n}", "X", "booked") for n in range(5))
    group = appointment(location=VIRTUAL, meeting_url="https://meet.example/x", attendees=many)
    draft = appointment_event(group, APP)
    assert draft.subject.endswith("with 5 customers") and draft.location == "Video meeting"
    assert 'href="https://meet.example/x"' in draft.body_html
    gone = appointment(attendees=(Attendee(7, "Jane", "Doe", "cancelled"),))
    assert appointment_event(gone, APP).subject.endswith("with no customer")


def test_templates_are_the_admins_and_the_body_escapes_html() -> None:
    hostile = appointment(attendees=(Attendee(7, "<script>", "Doe", "booked"),))
    draft = appointment_event(hostile, APP, Templates(subject="{{ customer }} ({{ code }})"))
    assert draft.subject == "<script> Doe (ABC123)", "a subject is plain text"
    assert "<script>" not in draft.body_html


def test_only_live_appointments_are_projected() -> None:
    assert is_live(appointment()) and is_live(appointment(status="completed"))
    assert not is_live(appointment(status="cancelled")) and not is_live(None)


def test_absences_made_in_coconut_become_busy_events_and_external_ones_never() -> None:
    draft = absence_event(absence())
    assert draft is not None and draft.subject == "Branch huddle" and draft.show_as == "busy"
    assert (draft.start, draft.time_zone) == ("2030-03-08T09:00:00", "America/Regina")
    assert absence_event(absence(source="external")) is None
    assert absence_event(absence(end=START)) is None


def test_an_all_day_absence_runs_midnight_to_midnight_in_its_zone() -> None:
    zone = ZoneInfo("America/Regina")
    day = datetime(2030, 3, 8, tzinfo=zone)
    draft = absence_event(absence(all_day=True, start=day, end=day + timedelta(days=2)))
    assert draft is not None and draft.is_all_day
    assert (draft.start, draft.end) == ("2030-03-08T00:00:00", "2030-03-10T00:00:00")


@given(
    minutes=st.integers(min_value=1, max_value=600),
    offset=st.integers(min_value=-400, max_value=400),
    zone=st.sampled_from(["America/Toronto", "America/Vancouver", "Europe/London", "Asia/Kolkata"]),
)
def test_every_projection_keeps_the_instants_and_never_names_attendees(
    minutes: int, offset: int, zone: str
) -> None:
    start = START + timedelta(days=offset)
    appt = appointment(start=start, end=start + timedelta(minutes=minutes), timezone=zone)
    draft = appointment_event(appt, APP)
    back = datetime.fromisoformat(draft.start).replace(tzinfo=ZoneInfo(draft.time_zone))
    assert back.astimezone(UTC) == start
    end = datetime.fromisoformat(draft.end).replace(tzinfo=ZoneInfo(draft.time_zone))
    assert end.astimezone(UTC) - back.astimezone(UTC) == timedelta(minutes=minutes)
    assert draft.digest == appointment_event(appt, APP).digest


@given(title=st.text(max_size=80), source=st.sampled_from(["coconut", "external"]))
def test_external_blocks_never_echo_back(title: str, source: str) -> None:
    draft = absence_event(absence(title=title, source=source))
    assert (draft is None) == (source == "external")
