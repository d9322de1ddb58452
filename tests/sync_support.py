"""Acting on both sides the way people do, and reading what the emulators hold.

`CoconutAdmin` changes Coconut through its API (the emulator then sends its real signed
webhooks to the running web app); `mailbox_events` reads a mailbox as the emulator stores it,
extended properties included, so tests check our events field by field.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.harness import COCONUT_CLIENT_ID, COCONUT_CLIENT_SECRET, System, wait_until
from workers.marks import MARK_PROPERTY_ID

API = "/api/v2/b2b"


class CoconutAdmin:
    """A Coconut admin's clicks, as API calls with an all-scopes client token."""

    def __init__(self, system: System) -> None:
        self.http = system.coconut_http()
        form = {"grant_type": "client_credentials", "client_id": COCONUT_CLIENT_ID,
                "client_secret": COCONUT_CLIENT_SECRET}  # fmt: skip
        token = self.http.post(f"{API}/oauth/token", data=form).raise_for_status().json()
        self.http.headers["Authorization"] = f"Bearer {token['access_token']}"

    def _send(self, method: str, path: str, kind: str, attrs: dict[str, Any], **extra: Any) -> Any:
        data: dict[str, Any] = {"type": kind, "attributes": attrs, **extra}
        if path.rsplit("/", 1)[-1].isdigit():
            data["id"] = path.rsplit("/", 1)[-1]
        answer = self.http.request(method, f"{API}{path}", json={"data": data})
        assert answer.status_code < 300, answer.text
        return answer.json()["data"]

    def book(self, start: str, staff_id: int, *, client_ids: tuple[int, ...] = (1,),
             **attrs: Any) -> int:  # fmt: skip
        attrs = {"start": start, "staff_id": staff_id, "location_id": 1, "service_id": [1],
                 **attrs}  # fmt: skip
        rel = {"attendees": {"data": [{"type": "clients", "id": str(c)} for c in client_ids]}}
        return int(self._send("POST", "/appointments", "appointments", attrs,
                              relationships=rel)["id"])  # fmt: skip

    def change(self, appointment_id: int, **attrs: Any) -> None:
        self._send("PATCH", f"/appointments/{appointment_id}", "appointments", attrs)

    def block(self, user_id: int, start: str, end: str, **attrs: Any) -> int:
        attrs = {"user_id": user_id, "start": start, "end": end, "source": "coconut", **attrs}
        return int(self._send("POST", "/absences", "absences", attrs)["id"])

    def change_block(self, absence_id: int, **attrs: Any) -> None:
        self._send("PATCH", f"/absences/{absence_id}", "absences", attrs)

    def delete_block(self, absence_id: int) -> None:
        self.http.delete(f"{API}/absences/{absence_id}").raise_for_status()

    def change_user(self, user_id: int, **attrs: Any) -> None:
        self._send("PATCH", f"/users/{user_id}", "users", attrs)

    def unassign(self, user_id: int) -> None:
        """Take away every location and service: the staff member no longer takes appointments."""
        rel = {"assignments": {"data": []}}
        self._send("PATCH", f"/users/{user_id}", "users", {}, relationships=rel)

    def appointment(self, appointment_id: int) -> dict[str, Any]:
        return self.http.get(f"{API}/appointments/{appointment_id}").raise_for_status().json()


def customer(coconut: CoconutAdmin, appointment_id: int) -> dict[str, Any]:
    """The appointment's (single) customer as Coconut holds them: names, email, phone."""
    doc = coconut.http.get(
        f"{API}/appointments/{appointment_id}", params={"include": "attendees"}
    ).json()
    (attendee,) = [i for i in doc["included"] if i["type"] == "attendees"]
    return dict(attendee["attributes"])


def customer_name(coconut: CoconutAdmin, appointment_id: int) -> str:
    person = customer(coconut, appointment_id)
    return f"{person['first_name']} {person['last_name']}"


Samples = dict[str, dict[tuple[tuple[str, str], ...], float]]


def scrape(url: str) -> Samples:
    """A /metrics page as {sample name: {sorted labels: value}}."""
    answer = httpx.get(url, timeout=10)
    assert answer.status_code == 200, answer.text
    return parse_metrics(answer.text)


def parse_metrics(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def graph_fault(system: System, **spec: Any) -> None:
    """Arm one of the Graph emulator's faults (kinds in emulators/graph/faults.py)."""
    with system.graph_http() as http:
        armed = http.post("/_emulator/faults", json=spec)
        assert armed.status_code < 300, armed.text


def user_id(system: System, address: str) -> str:
    users = system.graph_state()["users"]
    return next(u["id"] for u in users if u["mail"] == address)


def mark_of(event: dict[str, Any]) -> str | None:
    props = event.get("singleValueExtendedProperties") or []
    return next((p["value"] for p in props if p["id"].lower() == MARK_PROPERTY_ID.lower()), None)


def marked_events(system: System, address: str, mark: str) -> list[dict[str, Any]]:
    """Every event in the mailbox carrying exactly this mark."""
    events = system.graph_state()["events"].get(user_id(system, address), [])
    return [e for e in events if mark_of(e) == mark]


def wait_for_events(
    system: System, address: str, mark: str, count: int, check: Any = None, timeout: float = 60
) -> list[dict[str, Any]]:
    """Wait until the mailbox holds `count` events with the mark (and `check(events)` holds)."""
    found: list[dict[str, Any]] = []

    def ready() -> bool:
        nonlocal found
        found = marked_events(system, address, mark)
        return len(found) == count and (check is None or bool(check(found)))

    try:
        wait_until(ready, timeout, what=f"{count} event(s) marked {mark} in {address}")
    except TimeoutError as exc:
        logs = system.logs()[-4000:]
        raise AssertionError(f"{exc}; last seen: {found}\n--- logs ---\n{logs}") from None
    return found


def utc(event_time: dict[str, str]) -> datetime:
    """An event's start or end (the emulator's state renders them in UTC) as aware UTC."""
    assert event_time["timeZone"] == "UTC", event_time
    return datetime.fromisoformat(event_time["dateTime"][:19] + "+00:00")


def graph(system: System) -> httpx.Client:
    return system.graph_http()


class Outlook:
    """A staff member working in Outlook: the emulator's owner API (no app token involved)."""

    def __init__(self, system: System) -> None:
        self.system = system
        self.http = system.graph_http()

    def create(self, address: str, **body: Any) -> str:
        answer = self.http.post(f"/_emulator/users/{address}/events", json=body)
        assert answer.status_code == 201, answer.text
        return str(answer.json()["id"])

    def update(self, address: str, event_id: str, **body: Any) -> None:
        answer = self.http.patch(f"/_emulator/users/{address}/events/{event_id}", json=body)
        assert answer.status_code == 200, answer.text

    def delete(self, address: str, event_id: str) -> None:
        answer = self.http.delete(f"/_emulator/users/{address}/events/{event_id}")
        assert answer.status_code == 204, answer.text


def at(day: datetime, hour: int, zone: str = "UTC") -> dict[str, str]:
    return {"dateTime": day.replace(hour=hour).strftime("%Y-%m-%dT%H:%M:%S"), "timeZone": zone}


def busy_blocks(system: System, staff_id: int) -> list[dict[str, Any]]:
    """The external absences (busy blocks) on a staff member's Coconut calendar."""
    absences = system.coconut_state()["absences"]
    return [a for a in absences if a["source"] == "external" and a["user_id"] == staff_id]


def wait_blocks(
    system: System, staff_id: int, check: Any, timeout: float = 60, what: str = "busy blocks"
) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []

    def ready() -> bool:
        nonlocal found
        found = busy_blocks(system, staff_id)
        return bool(check(found))

    try:
        wait_until(ready, timeout, what=what)
    except TimeoutError as exc:
        logs = system.logs()[-6000:]
        raise AssertionError(f"{exc}; last seen: {found}\n--- logs ---\n{logs}") from None
    return found
