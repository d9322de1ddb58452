"""core.coconut.client.CoconutClient against the Coconut emulator running as its own process."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.coconut.client import CoconutClient
from core.coconut.models import AbsenceWrite, CoconutError, Conflict, Unavailable
from tests.emulator_launch import coconut_argv, launch
from tests.harness import COCONUT_CLIENT_ID, COCONUT_CLIENT_SECRET, free_port

STAFF = 7  # enough staff and appointments (3 each) that limit=100 pages are not all we test


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One emulator for the module; tests reset faults and settings they change."""
    port = free_port()
    log = Path(tmp_path_factory.mktemp("coconut")) / "coconut.log"
    argv = coconut_argv(port, "--staff", str(STAFF))
    process, _ = launch(argv, {**os.environ, "PYTHONUNBUFFERED": "1"}, log)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.stop()


@pytest.fixture
def control(emulator: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=emulator, timeout=10) as http:
        yield http
        http.delete("/_emulator/faults").raise_for_status()
        http.patch("/_emulator/settings", json={"rate_limit": 600}).raise_for_status()


@pytest.fixture
def client(emulator: str, control: httpx.Client) -> Iterator[CoconutClient]:
    with CoconutClient(f"{emulator}/api/v2/b2b", COCONUT_CLIENT_ID, COCONUT_CLIENT_SECRET) as c:
        yield c


def state(control: httpx.Client) -> dict[str, Any]:
    return control.get("/_emulator/state").raise_for_status().json()


def block(user_id: int, external_id: str, hours: int = 1) -> AbsenceWrite:
    start = datetime(2030, 3, 4, 15, 0, tzinfo=UTC)
    return AbsenceWrite(
        user_id=user_id,
        start=start,
        end=start + timedelta(hours=hours),
        all_day=False,
        timezone="America/Toronto",
        title="Busy",
        external_id=external_id,
        external_version="ck-1",
    )


def test_users_lists_every_staff_member_with_the_seeded_emails(client: CoconutClient) -> None:
    staff = list(client.users())
    emails = [s.email for s in staff]
    assert emails[:STAFF] == [f"user{n}@contoso.example" for n in range(1, STAFF + 1)]
    assert "nomailbox@contoso.example" in emails
    admin = next(s for s in staff if s.role == "admin")
    assert admin.takes_appointments is False
    bookable = list(client.users(takes_appointments=True))
    assert admin not in bookable and len(bookable) == len(staff) - 1
    (two,) = client.users(email="USER2@contoso.example")
    assert two.email == "user2@contoso.example"


def test_lists_follow_links_next_across_pages(
    client: CoconutClient, control: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With 3 per page, every appointment still arrives once, in id order, via links.next."""
    monkeypatch.setattr("core.coconut.client.PAGE_LIMIT", 3)
    before = state(control)["requests"]["by_route"].get("GET /api/v2/b2b/appointments", 0)
    got = [a.id for a in client.appointments()]
    expected = sorted(a["id"] for a in state(control)["appointments"])
    assert got == expected
    after = state(control)["requests"]["by_route"]["GET /api/v2/b2b/appointments"]
    assert after - before == -(-len(expected) // 3)


def test_appointment_carries_location_services_and_attendees(client: CoconutClient) -> None:
    group = client.get_appointment(1)
    assert group is not None
    assert group.start.tzinfo is not None and group.start < group.end
    assert group.location is not None and group.location.name == "Main Street Branch"
    assert [s.name for s in group.services] == ["First-time home buyers seminar"]
    assert len(group.attendees) == 2 and {a.status for a in group.attendees} == {"booked"}
    multi = client.get_appointment(2)
    assert multi is not None and multi.staff_ids == (1, 2)
    virtual = client.get_appointment(3)
    assert virtual is not None and virtual.location is not None and virtual.location.virtual
    assert virtual.meeting_url


def test_missing_records_are_none(client: CoconutClient) -> None:
    assert client.get_appointment(999_999) is None
    assert client.get_user(999_999) is None
    assert client.get_absence(999_999) is None


def test_appointment_filters_reach_the_api(client: CoconutClient) -> None:
    mine = list(client.appointments(user=2))
    assert mine and all(2 in a.staff_ids for a in mine)
    assert 2 in {a.id for a in mine}  # user 2 is the additional staff on appointment 2
    future = datetime.now(UTC) + timedelta(days=365)
    assert list(client.appointments(updated_since=future)) == []
    assert list(client.appointments(start_after=future)) == []


def test_naive_datetimes_are_refused_before_any_call(client: CoconutClient) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        list(client.appointments(updated_since=datetime(2030, 1, 1)))  # noqa: DTZ001


def test_absence_round_trip_with_if_match(client: CoconutClient) -> None:
    created = client.create_absence(block(1, "evt-roundtrip"))
    assert created.source == "external" and created.external_provider == "microsoft_exchange"
    assert created.external_id == "evt-roundtrip" and created.version == 1
    assert created.start == datetime(2030, 3, 4, 15, 0, tzinfo=UTC)
    assert client.get_absence(created.id) == created
    (listed,) = client.absences(user=1, source="external", external_id="evt-roundtrip")
    assert listed == created
    moved = client.update_absence(created.id, block(1, "evt-roundtrip", hours=2), if_match=1)
    assert moved.version == 2 and moved.end - moved.start == timedelta(hours=2)
    with pytest.raises(Conflict) as stale:
        client.update_absence(created.id, block(1, "evt-roundtrip"), if_match=1)
    assert stale.value.status == 409 and stale.value.code == "version_conflict"
    with pytest.raises(Conflict):
        client.delete_absence(created.id, if_match=1)
    assert client.delete_absence(created.id, if_match=2) is True
    assert client.delete_absence(created.id) is False
    assert client.get_absence(created.id) is None


def test_duplicate_external_id_is_a_conflict_naming_the_existing_absence(
    client: CoconutClient,
) -> None:
    first = client.create_absence(block(2, "evt-dup"))
    with pytest.raises(Conflict) as dup:
        client.create_absence(block(2, "evt-dup"))
    assert dup.value.existing_id == first.id
    assert dup.value.code == "duplicate_external_id"
    # Unique per user, not globally.
    other = client.create_absence(block(3, "evt-dup"))
    assert other.id != first.id


def test_validation_errors_name_the_problem(client: CoconutClient) -> None:
    admin = next(s for s in client.users() if s.role == "admin")
    with pytest.raises(CoconutError) as not_bookable:
        client.create_absence(block(admin.id, "evt-admin"))
    assert not_bookable.value.status == 422 and not_bookable.value.code == "user_not_bookable"
    backwards = block(1, "evt-backwards")
    backwards = AbsenceWrite(**{**backwards.__dict__, "end": backwards.start})
    with pytest.raises(CoconutError, match="start must be before end") as bad:
        client.create_absence(backwards)
    assert bad.value.status == 422


def test_stale_if_match_fault_gives_conflict(client: CoconutClient, control: httpx.Client) -> None:
    created = client.create_absence(block(1, "evt-forced-conflict"))
    control.post("/_emulator/faults/if_match_conflict", json={"count": 1}).raise_for_status()
    with pytest.raises(Conflict):
        client.update_absence(created.id, block(1, "evt-forced-conflict"), if_match=1)
    assert client.update_absence(created.id, block(1, "evt-forced-conflict", 3), if_match=1)


def test_expired_token_is_refreshed_once_and_the_call_repeated(
    client: CoconutClient, control: httpx.Client
) -> None:
    assert client.get_user(1) is not None
    issued = state(control)["tokens"]["issued"]
    control.post("/_emulator/tokens/expire").raise_for_status()
    assert client.get_user(1) is not None
    assert state(control)["tokens"]["issued"] == issued + 1


def test_wrong_secret_is_an_error_not_a_retry_loop(emulator: str) -> None:
    bad = CoconutClient(f"{emulator}/api/v2/b2b", COCONUT_CLIENT_ID, "wrong-secret")
    with bad, pytest.raises(CoconutError) as denied:
        bad.get_user(1)
    assert denied.value.status == 401 and denied.value.code == "invalid_client"


def test_429_is_retried_after_retry_after(client: CoconutClient, control: httpx.Client) -> None:
    control.post(
        "/_emulator/faults/api_error", json={"count": 2, "status": 429, "retry_after": 1}
    ).raise_for_status()
    started = datetime.now(UTC)
    assert client.get_user(1) is not None
    assert datetime.now(UTC) - started >= timedelta(seconds=2)
    assert state(control)["requests"]["by_status"]["429"] >= 2


def test_rate_limit_answers_429_with_retry_after(control: httpx.Client, emulator: str) -> None:
    control.patch("/_emulator/settings", json={"rate_limit": 3}).raise_for_status()
    token = httpx.post(
        f"{emulator}/api/v2/b2b/oauth/token",
        data={"grant_type": "client_credentials", "client_id": COCONUT_CLIENT_ID,
              "client_secret": COCONUT_CLIENT_SECRET},
    ).json()["access_token"]  # fmt: skip
    headers = {"Authorization": f"Bearer {token}"}
    answers = [httpx.get(f"{emulator}/api/v2/b2b/users/1", headers=headers) for _ in range(4)]
    limited = answers[-1]
    assert limited.status_code == 429
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    assert limited.headers["X-RateLimit-Limit"] == "3"
    assert limited.json()["errors"][0]["code"] == "rate_limited"


def test_503_retries_run_out_and_raise(client: CoconutClient, control: httpx.Client) -> None:
    control.post(
        "/_emulator/faults/api_error", json={"count": 10, "status": 503, "retry_after": 0}
    ).raise_for_status()
    with pytest.raises(Unavailable) as down:
        client.get_user(1)
    assert down.value.status == 503
    assert state(control)["faults"]["api_error"]["fired"] == 5


def test_unreachable_coconut_raises_unavailable() -> None:
    port = free_port()
    nowhere = CoconutClient(f"http://127.0.0.1:{port}/api/v2/b2b", "a", "b", timeout=1)
    with nowhere, pytest.raises(Unavailable, match="no answer"):
        nowhere.get_user(1)


def test_page_drift_repeats_a_row_and_the_client_keeps_going(
    client: CoconutClient, control: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A page served as if a row had been inserted ahead of it: one row twice, one missed.

    Offset paging cannot promise more; the caller's reconciliation is idempotent and the next
    run picks up the missed row. The client's part is to keep following links.next.
    """
    monkeypatch.setattr("core.coconut.client.PAGE_LIMIT", 3)
    control.post("/_emulator/faults/page_drift", json={"count": 1, "shift": 1}).raise_for_status()
    ids = [s.id for s in client.users()]
    everyone = sorted(u["id"] for u in state(control)["users"])
    assert ids == [*everyone[:3], *everyone[2:5], *everyone[6:9]]


def test_webhook_management(client: CoconutClient) -> None:
    hook = client.create_webhook(
        "http://127.0.0.1:9/hook", ["appointment.created"], secret="s" * 20
    )
    assert hook["secret"] == "s" * 20 and hook["active"] is True
    listed = {h["id"]: h for h in client.webhooks()}
    assert hook["id"] in listed and "secret" not in listed[hook["id"]]
    client.delete_webhook(hook["id"])
    client.delete_webhook(hook["id"])  # already gone: not an error
    assert hook["id"] not in {h["id"] for h in client.webhooks()}
    with pytest.raises(CoconutError) as bad:
        client.create_webhook("ftp://example.com/x", ["appointment.created"])
    assert bad.value.status == 422
