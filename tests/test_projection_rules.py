"""The pure rules that turn a Coconut appointment or absence into the event we want in Outlook."""

from __future__ import annotations

import re
from dataclasses import fields, replace
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.coconut.models import Absence, Appointment, Attendee, Location, Service
from workers.projection import (
    EventDraft,
    TemplateRefused,
    Templates,
    absence_event,
    appointment_event,
    is_live,
)
from workers.windows_zones import rules_zone

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
        "2030-03-08T10:00:00", "2030-03-08T11:00:00", "Eastern Standard Time",
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
    assert (draft.start, draft.time_zone) == ("2030-03-08T09:00:00", "Canada Central Standard Time")
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
    written = ZoneInfo(rules_zone(draft.time_zone))  # what Graph reads the Windows name as
    back = datetime.fromisoformat(draft.start).replace(tzinfo=written)
    assert back.astimezone(UTC) == start
    end = datetime.fromisoformat(draft.end).replace(tzinfo=written)
    assert end.astimezone(UTC) - back.astimezone(UTC) == timedelta(minutes=minutes)
    assert draft.digest == appointment_event(appt, APP).digest


@given(title=st.text(max_size=80), source=st.sampled_from(["coconut", "external"]))
def test_external_blocks_never_echo_back(title: str, source: str) -> None:
    draft = absence_event(absence(title=title, source=source))
    assert (draft is None) == (source == "external")


# ------------------------------------------------------------------ which appointments stay


@pytest.mark.parametrize(
    ("status", "live"),
    [("scheduled", True), ("completed", True), ("no_show", True), ("cancelled", False),
     ("deleted", False), ("", False)],
)  # fmt: skip
def test_a_completed_or_missed_appointment_keeps_its_event(status: str, live: bool) -> None:
    """A no-show still happened at that time: its event stays (only a cancelled one goes)."""
    assert is_live(appointment(status=status)) is live


# ------------------------------------------------------------------ what an appointment says

MANAGED = (
    "<p><i>Managed by Coconut: change or cancel this appointment in Coconut, not here.</i></p>"
)
IN_PERSON_BODY = f"""\
<p><b>Mortgage consultation</b> with Jane Doe</p>
<p>Main Street Branch (1 Main St, Toronto)</p>

<p><a href="{APP}/appointments/42">Open in Coconut</a> · ABC123</p>
{MANAGED}
"""


def test_an_in_person_appointment_is_the_default_template_filled_in() -> None:
    """The whole event, read off DEFAULT_BODY: no video link when there is no meeting."""
    assert appointment_event(appointment(), APP) == EventDraft(
        subject="Mortgage consultation with Jane Doe",
        body_html=IN_PERSON_BODY,
        location="Main Street Branch (1 Main St, Toronto)",
        start="2030-03-08T10:00:00",
        end="2030-03-08T11:00:00",
        time_zone="Eastern Standard Time",
        is_all_day=False,
        show_as="busy",
    )
    assert "Join the video meeting" not in IN_PERSON_BODY


def test_a_video_appointment_links_the_meeting_and_names_no_place() -> None:
    video = appointment(
        location=VIRTUAL, meeting_url="https://meet.example/x?a=1&b=2", confirmation_code=None
    )
    draft = appointment_event(video, APP)
    assert draft.location == "Video meeting"
    assert draft.body_html == (
        "<p><b>Mortgage consultation</b> with Jane Doe</p>\n"
        "<p>Virtual Branch</p>\n"
        '<p><a href="https://meet.example/x?a=1&amp;b=2">Join the video meeting</a></p>\n'
        f'<p><a href="{APP}/appointments/42">Open in Coconut</a></p>\n'
        f"{MANAGED}\n"
    )


@pytest.mark.parametrize(("method", "linked"), [(None, True), (3, True), (1, False), (2, False),
                                                (4, False)])  # fmt: skip
def test_only_a_video_appointment_links_its_meeting(method: int | None, linked: bool) -> None:
    # A booking changed from video to in person can keep its old link in Coconut.
    event = appointment_event(
        appointment(meeting_method=method, meeting_url="https://meet.example/x"), APP
    )
    assert ("https://meet.example/x" in event.body_html) is linked


def test_no_location_no_code_and_no_meeting_leave_no_trace() -> None:
    draft = appointment_event(appointment(location=None, confirmation_code=None), APP)
    assert draft.location == ""
    assert draft.body_html == (
        "<p><b>Mortgage consultation</b> with Jane Doe</p>\n"
        "\n"
        "\n"
        f'<p><a href="{APP}/appointments/42">Open in Coconut</a></p>\n'
        f"{MANAGED}\n"
    )
    shown = Templates(subject="[{{ location }}|{{ meeting_url }}|{{ code }}]")
    assert appointment_event(appointment(location=None), APP, shown).subject == "[||ABC123]"
    assert appointment_event(appointment(confirmation_code=""), APP, shown).subject == (
        "[Main Street Branch (1 Main St, Toronto)||]"
    )


def test_services_are_listed_and_none_reads_appointment() -> None:
    two = (Service(1, "Mortgage consultation", 60), Service(2, "Credit review", 30))
    assert appointment_event(appointment(services=two), APP).subject == (
        "Mortgage consultation, Credit review with Jane Doe"
    )
    none = appointment_event(appointment(services=()), APP)
    assert none.subject == "Appointment with Jane Doe"
    assert none.body_html.startswith("<p><b>Appointment</b> with Jane Doe</p>\n")


def test_up_to_three_customers_are_named_and_more_are_counted() -> None:
    def people(n: int) -> tuple[Attendee, ...]:
        return tuple(Attendee(k, f"C{k}", "X", "booked") for k in range(n))

    assert appointment_event(appointment(attendees=people(3)), APP).subject == (
        "Mortgage consultation with C0 X, C1 X, C2 X"
    )
    assert appointment_event(appointment(attendees=people(4)), APP).subject == (
        "Mortgage consultation with 4 customers"
    )
    # Cancelled attendees are neither named nor counted.
    mixed = (*people(3), Attendee(9, "Gone", "Away", "cancelled"))
    assert appointment_event(appointment(attendees=mixed), APP).subject == (
        "Mortgage consultation with C0 X, C1 X, C2 X"
    )
    one_name = (Attendee(7, "Cher", "", "booked"), Attendee(8, "", "Prince", "booked"))
    assert appointment_event(appointment(attendees=one_name), APP).subject == (
        "Mortgage consultation with Cher, Prince"
    )


@pytest.mark.parametrize(
    ("address", "city", "shown"),
    [
        ("1 Main St", "Toronto", "Main Street Branch (1 Main St, Toronto)"),
        ("1 Main St", None, "Main Street Branch (1 Main St)"),
        (None, "Toronto", "Main Street Branch (Toronto)"),
        ("", "", "Main Street Branch"),
        (None, None, "Main Street Branch"),
    ],
)
def test_a_branch_is_named_with_what_is_known_of_its_street(
    address: str | None, city: str | None, shown: str
) -> None:
    place = replace(TORONTO, address=address, city=city)
    draft = appointment_event(appointment(location=place), APP)
    assert draft.location == shown
    assert f"<p>{shown}</p>\n" in draft.body_html


def test_the_subject_is_one_line_of_at_most_255_characters() -> None:
    spaced = Templates(subject="  {{ service }}\n\n\twith   {{ customer }}  ")
    assert appointment_event(appointment(), APP, spaced).subject == (
        "Mortgage consultation with Jane Doe"
    )
    long = appointment(services=(Service(1, "S" * 300, 60),))
    assert appointment_event(long, APP).subject == "S" * 255
    near = appointment(services=(Service(1, "S" * 243, 60),))  # + " with Jane Doe" = 257
    assert appointment_event(near, APP).subject == "S" * 243 + " with Jane D"


def test_the_subject_template_is_plain_text_and_the_body_template_html() -> None:
    amp = appointment(attendees=(Attendee(7, "Tom", "& Jerry", "booked"),))
    admin = Templates(subject="{{ customer }}", body="<p>{{ customer }}</p>")
    draft = appointment_event(amp, APP, admin)
    assert (draft.subject, draft.body_html) == ("Tom & Jerry", "<p>Tom &amp; Jerry</p>")


def test_a_template_that_cannot_render_is_refused_naming_its_setting() -> None:
    """A typo or a syntax error stops the job with the variable the admin must correct."""
    typo = Templates(subject="{{ custmer }}")
    with pytest.raises(TemplateRefused, match=r"^EXSYNC_EVENT_SUBJECT_TEMPLATE .*'custmer'"):
        appointment_event(appointment(), APP, typo)
    broken = Templates(body="<p>{% if service %}</p>")
    with pytest.raises(TemplateRefused, match=r"^EXSYNC_EVENT_BODY_TEMPLATE cannot be used: "):
        appointment_event(appointment(), APP, broken)


# ------------------------------------------------------------------ a change is a new digest


def test_a_change_to_any_one_field_changes_the_digest() -> None:
    draft = appointment_event(appointment(), APP)
    assert re.fullmatch("[0-9a-f]{32}", draft.digest)
    assert draft.digest == replace(draft).digest
    changed = {
        "subject": "Other", "body_html": draft.body_html + " ", "location": "Elsewhere",
        "start": "2030-03-08T10:30:00", "end": "2030-03-08T11:30:00",
        "time_zone": "Canada Central Standard Time", "is_all_day": True, "show_as": "oof",
    }  # fmt: skip
    assert set(changed) == {f.name for f in fields(EventDraft)}
    digests = {name: replace(draft, **{name: value}).digest for name, value in changed.items()}
    assert draft.digest not in digests.values()
    assert len(set(digests.values())) == len(changed)


def test_a_change_to_the_body_alone_is_written() -> None:
    """A new meeting link or confirmation code changes only the body: still a new digest."""
    before = appointment_event(appointment(location=VIRTUAL, meeting_url="https://meet/a"), APP)
    after = appointment_event(appointment(location=VIRTUAL, meeting_url="https://meet/b"), APP)
    assert (before.subject, before.location) == (after.subject, after.location)
    assert before.body_html != after.body_html and before.digest != after.digest
    coded = appointment_event(appointment(confirmation_code="XYZ789"), APP)
    assert coded.digest != appointment_event(appointment(), APP).digest


# ------------------------------------------------------------------ absences

REGINA = ZoneInfo("America/Regina")  # UTC-6 all year, west of UTC
AUCKLAND = ZoneInfo("Pacific/Auckland")  # UTC+13 in March 2030, east of UTC
KOLKATA = ZoneInfo("Asia/Kolkata")  # UTC+5:30
WINDOWS = {REGINA: "Canada Central Standard Time", AUCKLAND: "New Zealand Standard Time",
           KOLKATA: "India Standard Time"}  # fmt: skip


def test_a_timed_absence_is_a_busy_event_in_its_zone() -> None:
    assert absence_event(absence(title=None)) == EventDraft(
        subject="Busy", body_html="", location="", start="2030-03-08T09:00:00",
        end="2030-03-08T11:00:00", time_zone="Canada Central Standard Time", is_all_day=False,
        show_as="busy",
    )  # fmt: skip
    assert absence_event(absence(title="")).subject == "Busy"  # type: ignore[union-attr]
    assert absence_event(absence(end=START - timedelta(minutes=1))) is None


@pytest.mark.parametrize("zone", [REGINA, AUCKLAND, KOLKATA], ids=str)
@pytest.mark.parametrize("as_utc", [False, True], ids=["local", "utc"])
def test_an_all_day_absence_keeps_its_dates_whatever_the_zones(
    server_zone: str, zone: ZoneInfo, as_utc: bool
) -> None:
    start, end = datetime(2030, 3, 8, tzinfo=zone), datetime(2030, 3, 10, tzinfo=zone)
    if as_utc:  # the same instants, as Coconut might answer them
        start, end = start.astimezone(UTC), end.astimezone(UTC)
    draft = absence_event(absence(all_day=True, start=start, end=end, timezone=str(zone),
                                  title=None))  # fmt: skip
    assert draft == EventDraft(
        subject="Busy", body_html="", location="", start="2030-03-08T00:00:00",
        end="2030-03-10T00:00:00", time_zone=WINDOWS[zone], is_all_day=True, show_as="busy",
    )  # fmt: skip


@pytest.mark.parametrize("zone", [REGINA, AUCKLAND], ids=str)
@pytest.mark.parametrize(
    ("first", "last", "dates"),
    [
        ((8, 0), (8, 12), ("2030-03-08", "2030-03-09")),  # part of one day: that day
        ((8, 0), ((8, 23, 59, 59)), ("2030-03-08", "2030-03-09")),
        ((8, 9), (9, 17), ("2030-03-08", "2030-03-10")),  # ends during its last day
        ((8, 9), (10, 0), ("2030-03-08", "2030-03-10")),  # ends at midnight: not extended
        ((8, 23, 59, 59), (9, 0, 0, 1), ("2030-03-08", "2030-03-10")),
    ],
)
def test_an_all_day_absence_off_midnight_covers_every_day_it_touches(
    server_zone: str, zone: ZoneInfo, first: tuple[int, ...], last: tuple[int, ...],
    dates: tuple[str, str],
) -> None:  # fmt: skip
    start = datetime(2030, 3, *first, tzinfo=zone).astimezone(UTC)
    end = datetime(2030, 3, *last, tzinfo=zone).astimezone(UTC)
    draft = absence_event(absence(all_day=True, start=start, end=end, timezone=str(zone)))
    assert draft is not None and draft.is_all_day
    assert (draft.start, draft.end) == (f"{dates[0]}T00:00:00", f"{dates[1]}T00:00:00")
    assert (draft.subject, draft.body_html, draft.location) == ("Branch huddle", "", "")
    assert draft.time_zone == WINDOWS[zone]


def test_an_all_day_absence_across_a_dst_change_is_still_whole_days() -> None:
    toronto = ZoneInfo("America/Toronto")  # clocks go forward on 2030-03-10
    start, end = datetime(2030, 3, 9, tzinfo=toronto), datetime(2030, 3, 11, tzinfo=toronto)
    draft = absence_event(absence(all_day=True, start=start, end=end, timezone=str(toronto)))
    assert draft is not None
    assert (draft.start, draft.end) == ("2030-03-09T00:00:00", "2030-03-11T00:00:00")


def test_external_or_empty_all_day_absences_are_not_projected() -> None:
    day = datetime(2030, 3, 8, tzinfo=REGINA)
    assert absence_event(absence(all_day=True, start=day, end=day)) is None
    external = absence(all_day=True, start=day, end=day + timedelta(days=1), source="external")
    assert absence_event(external) is None
