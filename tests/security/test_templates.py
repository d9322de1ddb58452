"""Finding 9: the admin's event templates run in Jinja2's sandbox, and a meeting URL from
Coconut becomes a link only when it is https."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from jinja2.sandbox import SecurityError

from core.coconut.models import Appointment, Attendee, Location, Service
from workers.projection import Templates, appointment_event

APP = "https://bank.coconutcalendar.com"
VIRTUAL = Location(3, "Virtual Branch", None, None, None, None, None, "America/Toronto", True)
START = datetime(2030, 3, 8, 15, 0, tzinfo=UTC)

ESCAPES = {
    "subclasses": "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "globals": "{{ cycler.__init__.__globals__.os.getpid() }}",
    "format": "{{ '{0.__class__.__mro__}'.format(service) }}",
    "mutation": "{% set seen = [] %}{{ seen.append(service) }}",
}


def video(meeting_url: str | None) -> Appointment:
    return Appointment(
        id=42, status="scheduled", start=START, end=START + timedelta(hours=1),
        timezone="America/Toronto", staff_id=1, additional_staff_ids=(), location=VIRTUAL,
        services=(Service(1, "Mortgage consultation", 60),),
        attendees=(Attendee(7, "Jane", "Doe", "booked"),), notes=None,
        meeting_url=meeting_url, confirmation_code="ABC123", version=1, updated_at=START,
    )  # fmt: skip


@pytest.mark.parametrize("escape", ESCAPES.values(), ids=ESCAPES.keys())
def test_a_subject_template_reaching_python_internals_is_refused(escape: str) -> None:
    with pytest.raises(ValueError, match=r"EXSYNC_EVENT_SUBJECT_TEMPLATE .*unsafe") as refused:
        appointment_event(video(None), APP, Templates(subject=escape))
    assert isinstance(refused.value.__cause__, SecurityError)


@pytest.mark.parametrize("escape", ESCAPES.values(), ids=ESCAPES.keys())
def test_a_body_template_reaching_python_internals_is_refused(escape: str) -> None:
    with pytest.raises(ValueError, match=r"EXSYNC_EVENT_BODY_TEMPLATE .*unsafe") as refused:
        appointment_event(video(None), APP, Templates(body=f"<p>{escape}</p>"))
    assert isinstance(refused.value.__cause__, SecurityError)


@pytest.mark.parametrize(
    "url",
    [
        "javascript:alert(document.cookie)",
        "JavaScript:alert(1)//https://meet.example/x",
        " javascript:alert(1)",
        "data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==",
        "vbscript:msgbox(1)",
        "http://meet.example/x",
        "//evil.example/x",
    ],
)
def test_a_meeting_url_other_than_https_becomes_no_link(url: str) -> None:
    body = appointment_event(video(url), APP).body_html
    assert "Join the video meeting" not in body
    assert [href for href in body.split('href="')[1:] if not href.startswith(APP)] == []
    assert url.strip() not in body
