"""Coconut's records and refusals as the service reads them: plain data, no I/O.

The pure rules (workers.projection, workers.busy_time, workers.held_blocks) take these, so they
live apart from the HTTP client (core.coconut.client), which builds them from Coconut's JSON:API
documents and raises the errors.

Errors::

    CoconutError            any answer we cannot use; .status (None for no answer), .code
    ├── NotFound            404 (the client's get_* methods turn it into None)
    ├── Conflict            409: duplicate (user_id, external_id) or stale If-Match; .existing_id
    └── Unavailable         429, 503 or no connection, after the retries; .retry_after
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


class CoconutError(Exception):
    """Coconut answered with something we cannot use; the reason is in str(exc)."""

    def __init__(self, reason: str, status: int | None = None, code: str | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.code = code


class NotFound(CoconutError):
    """404: the record does not exist (any more)."""


class Conflict(CoconutError):
    """409: a duplicate (user_id, external_id), whose id is `existing_id`, or a stale If-Match."""

    def __init__(
        self, reason: str, status: int | None = 409, code: str | None = None,
        existing_id: int | None = None,
    ) -> None:  # fmt: skip
        super().__init__(reason, status, code)
        self.existing_id = existing_id


class Unavailable(CoconutError):
    """429, 503 or no connection: retried, then raised; `retry_after` is Coconut's hint."""

    def __init__(
        self, reason: str, status: int | None = None, code: str | None = None,
        retry_after: float | None = None,
    ) -> None:  # fmt: skip
        super().__init__(reason, status, code)
        self.retry_after = retry_after


@dataclass(frozen=True)
class Staff:
    id: int
    first_name: str
    last_name: str
    email: str
    timezone: str
    takes_appointments: bool
    active: bool
    role: str
    version: int


@dataclass(frozen=True)
class Location:
    id: int
    name: str
    address: str | None
    city: str | None
    prov_state: str | None
    country: str | None
    zip_postal: str | None
    timezone: str
    virtual: bool


@dataclass(frozen=True)
class Service:
    id: int
    name: str
    duration: int


@dataclass(frozen=True)
class Attendee:
    id: int
    first_name: str
    last_name: str
    status: str  # booked | cancelled


VIDEO = 3


@dataclass(frozen=True)
class Appointment:
    id: int
    status: str  # scheduled | cancelled | completed | no_show
    start: datetime
    end: datetime
    timezone: str
    staff_id: int | None
    additional_staff_ids: tuple[int, ...]
    location: Location | None
    services: tuple[Service, ...]
    attendees: tuple[Attendee, ...]
    notes: str | None
    meeting_url: str | None
    confirmation_code: str | None
    version: int
    updated_at: datetime
    # How the customer meets the staff member: 1 at the location, 2 by phone, 3 by video, 4 off
    # site (research/coconut.md). None when Coconut did not say.
    meeting_method: int | None = None

    @property
    def staff_ids(self) -> tuple[int, ...]:
        """Primary first, then the additional staff, each once."""
        ordered = [self.staff_id] if self.staff_id is not None else []
        ordered += [s for s in self.additional_staff_ids if s != self.staff_id]
        return tuple(dict.fromkeys(ordered))


@dataclass(frozen=True)
class AbsenceTimes:
    """When and for whom an absence blocks time, and what it shows: what Coconut holds and
    what we write alike."""

    user_id: int
    start: datetime
    end: datetime
    all_day: bool
    timezone: str
    title: str


@dataclass(frozen=True)
class Absence(AbsenceTimes):
    id: int
    notes: str | None
    source: str  # coconut | external
    external_provider: str | None
    external_id: str | None
    external_version: str | None
    version: int
    updated_at: datetime


@dataclass(frozen=True)
class AbsenceWrite(AbsenceTimes):
    """What we write for one Exchange event; times must be timezone-aware."""

    notes: str | None = None
    external_id: str | None = None
    external_version: str | None = None
