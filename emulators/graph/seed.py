"""Seeded mailboxes: user1@domain … userN@domain, each with a few events around today.

The mix is what a bank adviser's calendar holds: a single meeting, a private appointment, an
all-day out-of-office and a weekly recurring series, so every sync path has something to chew.
`extra` more one-hour busy meetings per mailbox, six a day from tomorrow, make a full calendar
for benchmarks in no time (made through the API, thousands take minutes).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from emulators.graph.store import Store

ZONES = ["W. Europe Standard Time", "GMT Standard Time", "Eastern Standard Time"]


def seed(store: Store, users: int, domain: str, extra: int = 0) -> None:
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    for n in range(1, users + 1):
        zone = ZONES[(n - 1) % len(ZONES)]
        user = store.add_user(f"user{n}@{domain}", f"User {n}", zone)
        for body in [*_events(today, zone), *_meetings(today, zone, extra)]:
            store.create_event(user.id, body)


def _meetings(today: datetime, zone: str, count: int) -> list[dict[str, object]]:
    days = [today + timedelta(days=1 + n // 6) for n in range(count)]
    return [
        {"subject": f"Meeting {n}", "showAs": "busy", "start": _at(day, 7 + n % 6, zone),
         "end": _at(day, 8 + n % 6, zone)}
        for n, day in enumerate(days)
    ]  # fmt: skip


def _at(day: datetime, hour: int, zone: str) -> dict[str, str]:
    return {"dateTime": (day + timedelta(hours=hour)).strftime("%Y-%m-%dT%H:%M:%S"),
            "timeZone": zone}  # fmt: skip


def _events(today: datetime, zone: str) -> list[dict[str, object]]:
    tomorrow, later = today + timedelta(days=1), today + timedelta(days=3)
    return [
        {"subject": "Team meeting", "start": _at(tomorrow, 10, zone),
         "end": _at(tomorrow, 11, zone), "showAs": "busy"},
        {"subject": "Doctor", "sensitivity": "private", "start": _at(later, 14, zone),
         "end": _at(later, 15, zone), "showAs": "oof"},
        {"subject": "Conference", "isAllDay": True, "showAs": "oof",
         "start": _at(today + timedelta(days=5), 0, zone),
         "end": _at(today + timedelta(days=6), 0, zone)},
        {"subject": "Weekly review", "start": _at(today, 16, zone), "end": _at(today, 17, zone),
         "recurrence": {
             "pattern": {"type": "weekly", "interval": 1,
                         "daysOfWeek": [today.strftime("%A").lower()]},
             "range": {"type": "numbered", "startDate": today.date().isoformat(),
                       "numberOfOccurrences": 8},
         }},
    ]  # fmt: skip
