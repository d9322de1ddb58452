"""The deterministic starting tenant: branches, services, staff, clients, upcoming appointments.

Ids and names are the same on every start; appointment times are relative to today so the data
is always "upcoming". The cast covers the sync's edge cases: staff in a different time zone
from their branch, a virtual branch, an admin who takes no appointments, a staff member with no
Exchange mailbox, a group appointment, a multi-staff appointment, a cancelled one, and one
absence made in Coconut. `bookings` more one-hour bookings per staff member, eight a day from
the day after tomorrow, fill calendars for benchmarks without a webhook each.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from emulators.coconut.jsonapi import utcnow
from emulators.coconut.store import Store

STAFF_ZONES = ("America/Toronto", "America/Vancouver", "America/Regina")
FIRST_NAMES = ("Alice", "Bilal", "Chen", "Dana", "Emeka", "Fatima", "Gustavo", "Hana")
LAST_NAMES = ("Archer", "Baptiste", "Cheng", "Dubois", "Eze", "Fortin", "Garcia", "Hayashi")
CLIENTS = (
    ("Ada", "Lovelace"),
    ("Grace", "Hopper"),
    ("Alan", "Turing"),
    ("Katherine", "Johnson"),
    ("Edsger", "Dijkstra"),
    ("Barbara", "Liskov"),
)


def seed(
    store: Store, staff: int, domain: str, now: datetime | None = None, bookings: int = 0
) -> None:
    """Fill an empty store; `now` (aware) anchors the appointments, default the current time."""
    now = now or utcnow()
    with store.lock:
        main = store.insert("locations", location("Main Street Branch", "America/Toronto", 1))
        prairie = store.insert("locations", location("Prairie Branch", "America/Regina", 2))
        virtual = store.insert("locations", location("Virtual Branch", "America/Toronto", 3))
        services = [
            store.insert("services", service("Mortgage consultation", 60, 1)),
            store.insert("services", service("Open an account", 30, 2)),
            store.insert("services", service("Financial planning review", 45, 3)),
            store.insert("services", service("First-time home buyers seminar", 90, 4, group=1)),
        ]
        core_services = [s["id"] for s in services[:3]]
        people = []
        for n in range(1, staff + 1):
            first, last = FIRST_NAMES[(n - 1) % 8], LAST_NAMES[(n - 1) % 8]
            tz = STAFF_ZONES[(n - 1) % 3]
            person = store.insert("users", user(first, last, f"user{n}@{domain}", tz, "staff"))
            branch = main if n % 2 else prairie
            assign(store, person["id"], branch["id"], core_services)
            people.append((person, branch))
        if people:
            assign(store, people[0][0]["id"], virtual["id"], [services[0]["id"], services[2]["id"]])
        nomailbox = store.insert(
            "users", user("Nora", "Nomailbox", f"nomailbox@{domain}", "America/Toronto", "staff")
        )
        assign(store, nomailbox["id"], main["id"], [services[1]["id"]])
        people.append((nomailbox, main))
        store.insert("users", user("Avery", "Admin", f"admin@{domain}", "America/Toronto", "admin"))
        clients = [
            store.insert("clients", client(first, last, n))
            for n, (first, last) in enumerate(CLIENTS, start=1)
        ]
        appointments(store, people, services, clients, virtual, now)
        more_bookings(store, people[:-1], services[0], clients[0], now, bookings)
        if people[:-1]:
            team_meeting(store, people[0][0], now)


Record = dict[str, Any]


def team_meeting(store: Store, person: Record, now: datetime) -> None:
    """The one absence made in Coconut: tomorrow at noon for the first staff member."""
    day = local_day(now, person["timezone"], 1)
    store.insert(
        "absences",
        {
            "user_id": person["id"],
            "start": day.replace(hour=12),
            "end": day.replace(hour=13),
            "all_day": False,
            "timezone": person["timezone"],
            "title": "Team meeting",
            "notes": None,
            "source": "coconut",
            "external_provider": None,
            "external_id": None,
            "external_version": None,
        },
    )


def appointments(
    store: Store,
    people: list[tuple[Record, Record]],
    services: list[Record],
    clients: list[Record],
    virtual: Record,
    now: datetime,
) -> None:
    """Three per staff member over the next two weeks, with the special cases on the first two."""
    for k, (person, branch) in enumerate(people):
        for j in range(3):
            location = branch
            service = services[(k + j) % 3]
            attendees = [clients[(k * 3 + j) % len(clients)]["id"]]
            extra: list[int] = []
            method = 1
            if k == 0 and j == 0:
                service = services[3]
                attendees.append(clients[-1]["id"])
            if k == 0 and j == 1 and len(people) > 2:
                extra = [people[1][0]["id"]]
            if k == 0 and j == 2:
                location, method = virtual, 3
            day = local_day(now, location["timezone"], 1 + (k * 3 + j) % 13)
            start = day.replace(hour=9 + (2 * j + k) % 7)
            record = store.new_appointment(
                start=start,
                end=start + timedelta(minutes=service["duration"]),
                timezone=location["timezone"],
                staff_id=person["id"],
                additional_staff_id=extra,
                location_id=location["id"],
                service_id=[service["id"]],
                notes=None,
                meeting_method=method,
                client_ids=attendees,
            )
            if k == min(1, len(people) - 1) and j == 2:
                record.update(status="cancelled", cancelled_at=utcnow())
                for attendee in record["attendees"]:
                    attendee["status"] = "cancelled"
            store.insert("appointments", record)


def more_bookings(
    store: Store, people: list[tuple[Record, Record]], service: Record, client: Record,
    now: datetime, count: int,
) -> None:  # fmt: skip
    for person, branch in people:
        for n in range(count):
            start = local_day(now, branch["timezone"], 2 + n // 8).replace(hour=9 + n % 8)
            record = store.new_appointment(
                start=start, end=start + timedelta(minutes=service["duration"]),
                timezone=branch["timezone"], staff_id=person["id"], additional_staff_id=[],
                location_id=branch["id"], service_id=[service["id"]], notes=None,
                meeting_method=1, client_ids=[client["id"]],
            )  # fmt: skip
            store.insert("appointments", record)


def local_day(now: datetime, timezone: str, days_ahead: int) -> datetime:
    """Midnight, `days_ahead` days after today in `timezone`, as an aware datetime."""
    today = now.astimezone(ZoneInfo(timezone)).date() + timedelta(days=days_ahead)
    return datetime(today.year, today.month, today.day, tzinfo=ZoneInfo(timezone))


def assign(store: Store, user_id: int, location_id: int, service_ids: list[int]) -> None:
    store.insert(
        "assignments",
        {"user_id": user_id, "location_id": location_id, "service_ids": service_ids},
    )


def location(name: str, timezone: str, n: int) -> dict[str, object]:
    virtual = name.startswith("Virtual")
    city, prov = ("Toronto", "ON") if timezone == "America/Toronto" else ("Regina", "SK")
    return {
        "name": name,
        "address": None if virtual else f"{100 * n} Main Street",
        "city": None if virtual else city,
        "prov_state": None if virtual else prov,
        "country": None if virtual else "CA",
        "zip_postal": None if virtual else ("M5H 2N2" if prov == "ON" else "S4P 3Y2"),
        "timezone": timezone,
        "virtual": 1 if virtual else 0,
        "phone": f"+1-555-010-{n:04d}",
        "external_id": f"LOC-{n:03d}",
    }


def service(name: str, duration: int, n: int, group: int = 0) -> dict[str, object]:
    return {
        "name": name,
        "description": f"{name} ({duration} minutes)",
        "duration": duration,
        "group": group,
        "external_id": f"SVC-{n:03d}",
    }


def user(first: str, last: str, email: str, timezone: str, role: str) -> dict[str, object]:
    return {
        "first_name": first,
        "last_name": last,
        "email": email,
        "username": email.split("@")[0],
        "external_id": f"EMP-{email.split('@')[0].upper()}",
        "timezone": timezone,
        "lang": "en",
        "role": role,
        "active": True,
    }


def client(first: str, last: str, n: int) -> dict[str, object]:
    return {
        "first_name": first,
        "last_name": last,
        "email": f"{first.lower()}.{last.lower()}@example.com",
        "cell_phone": f"+1-555-020-{n:04d}",
        "phone": None,
        "work_phone": None,
        "lang": "en",
        "external_id": f"CLI-{n:03d}",
        "receive_sms": n % 2 == 1,
    }
