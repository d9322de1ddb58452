"""The tables behind the one lock, and what every write shares: ids, stamps, versions.

Records are plain dicts keyed by integer id. `insert` gives a record its id, `version` 1 and both
stamps; `apply` writes the changes that differ and bumps `version` and `updated_at`;
`check_version` is If-Match. The per-concern parts (users.py, appointments.py, absences.py,
webhooks.py) build on this; rendering a record is emulators/coconut/render.py's job.
"""

from __future__ import annotations

import itertools
import random
import threading
from dataclasses import dataclass
from typing import Any

from emulators.coconut.faults import Faults
from emulators.coconut.jsonapi import ApiError, invalid, utcnow
from emulators.coconut.store.checks import want_int

Record = dict[str, Any]
COLLECTIONS = (
    "users", "assignments", "locations", "services", "clients", "appointments", "absences",
    "webhooks",
)  # fmt: skip


@dataclass
class Settings:
    """Knobs changed at run time through `PATCH /_emulator/settings`."""

    token_lifetime: int = 3600
    rate_limit: int = 600
    retry_scale: float = 1.0
    max_attempts: int = 8
    disable_after: int = 10
    max_absence_days: int | None = None

    def as_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


class Records:
    """Every collection, the delivery queue and the armed faults; guarded by `lock`."""

    def __init__(self, tenant: str, settings: Settings) -> None:
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self.tenant = tenant
        self.settings = settings
        self.rng = random.Random(7)
        self.faults = Faults(self.lock, self.rng)
        self.clear()

    def clear(self) -> None:
        """Forget every record; tokens and faults survive so a running client keeps working."""
        with self.lock:
            self.ids = {kind: itertools.count(1) for kind in self.collections()}
            self.users: dict[int, Record] = {}
            self.assignments: dict[int, Record] = {}
            self.locations: dict[int, Record] = {}
            self.services: dict[int, Record] = {}
            self.clients: dict[int, Record] = {}
            self.appointments: dict[int, Record] = {}
            self.absences: dict[int, Record] = {}
            self.webhooks: dict[int, Record] = {}
            self.attendee_ids = itertools.count(1)
            self.deliveries: dict[str, Record] = {}
            # Every deleted absence with when it went: a checker can ask whether each removal
            # of a busy block had a reason (`removed_absences` in /_emulator/state).
            self.removed: list[Record] = []
            self.outbox: list[tuple[float, int, str, bool]] = []  # (due, seq, delivery, is_copy)
            # reorder fault: (held since, delivery, batch, hold_seconds)
            self.held: list[tuple[float, str, int, float]] = []
            self.sequence = itertools.count()

    @staticmethod
    def collections() -> tuple[str, ...]:
        return COLLECTIONS

    def table(self, kind: str) -> dict[int, Record]:
        return getattr(self, kind)

    def insert(self, kind: str, record: Record) -> Record:
        """Add a record with a fresh id, version 1 and both stamps; used by seed and creates."""
        now = utcnow()
        record = {"id": next(self.ids[kind]), **record, "created_at": now, "updated_at": now}
        record["version"] = 1
        self.table(kind)[record["id"]] = record
        return record

    def get(self, kind: str, record_id: int) -> Record:
        record = self.table(kind).get(record_id)
        if record is None:
            raise ApiError(404, "not_found", "Not found", f"no {kind} with id {record_id}")
        return record

    def check_version(self, record: Record, if_match: int | None) -> None:
        """If-Match: a stale version (or the armed fault) is a 409 carrying the current one."""
        if if_match is None:
            return
        forced = self.faults.fire("if_match_conflict") is not None
        if forced or if_match != record["version"]:
            raise ApiError(
                409,
                "version_conflict",
                "Version conflict",
                f"If-Match {if_match} does not match the current version",
                meta={"current_version": record["version"]},
            )

    def apply(self, record: Record, changes: dict[str, Any]) -> list[str]:
        """Write the changes that differ; bump version and updated_at if any did."""
        changed = sorted(k for k, v in changes.items() if record.get(k) != v)
        if changed:
            for key in changed:
                record[key] = changes[key]
            record["version"] += 1
            record["updated_at"] = utcnow()
        return changed

    def takes_appointments(self, user_id: int) -> bool:
        """Coconut's rule: at least one assignment with a location and a service."""
        return any(
            a["user_id"] == user_id and a["location_id"] and a["service_ids"]
            for a in self.assignments.values()
        )

    def require_bookable(self, user_id: int, pointer: str) -> None:
        """Appointments and absences are only for active staff who take appointments."""
        user = self.users.get(user_id)
        if user is None or not user["active"] or not self.takes_appointments(user_id):
            raise invalid(
                f"user {user_id} does not take appointments", pointer, code="user_not_bookable"
            )

    def reference(self, kind: str, value: Any, name: str) -> Record:
        pointer = f"/data/attributes/{name}"
        record = self.table(kind).get(want_int(value, pointer))
        if record is None:
            raise invalid(f"no {kind} with id {value}", pointer)
        return record

    def references(self, kind: str, value: Any, name: str) -> list[Record]:
        values = value if isinstance(value, list) else [value]
        if not values:
            raise invalid(f"{name} must not be empty", f"/data/attributes/{name}")
        return [self.reference(kind, v, name) for v in values]
