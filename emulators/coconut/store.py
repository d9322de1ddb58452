"""The emulator's whole state, in memory, behind one lock.

Every write goes through a method here, which validates strictly, bumps `version` and
`updated_at`, and queues webhook deliveries for the sender threads (deliveries.py). Nothing here
sends HTTP: a request that changes something only queues, exactly as a real SaaS does.

Records are plain dicts keyed by integer id; `attributes()` turns one into the JSON:API
attributes the contract (core/coconut_openapi.yaml) describes.
"""

from __future__ import annotations

import heapq
import hmac
import itertools
import json
import random
import secrets
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from emulators.coconut.faults import Trigger
from emulators.coconut.jsonapi import (
    ApiError,
    fmt_local,
    fmt_utc,
    invalid,
    parse_time,
    utcnow,
    zone,
)

SCOPES = (
    "users:read",
    "users:write",
    "appointments:read",
    "appointments:write",
    "absences:read",
    "absences:write",
    "webhooks:manage",
)
EVENTS = (
    "appointment.created",
    "appointment.updated",
    "appointment.rescheduled",
    "appointment.cancelled",
    "appointment.reassigned",
    "user.updated",
    "absence.created",
    "absence.updated",
    "absence.deleted",
)
APPOINTMENT_STATUSES = ("scheduled", "cancelled", "completed", "no_show")
MEETING_METHODS = (1, 2, 3, 4)
TIME_FIELDS = ("start", "end")
STAMP_FIELDS = ("created_at", "updated_at", "cancelled_at")
HIDDEN_FIELDS = {"id", "secret", "attendees"}


@dataclass
class Token:
    client_id: str
    scopes: frozenset[str]
    expires_at: float


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


@dataclass
class Counters:
    total: int = 0
    by_route: dict[str, int] = field(default_factory=dict)
    by_status: dict[str, int] = field(default_factory=dict)

    def count(self, route: str, status: int) -> None:
        self.total += 1
        self.by_route[route] = self.by_route.get(route, 0) + 1
        self.by_status[str(status)] = self.by_status.get(str(status), 0) + 1


class Store:
    """All collections, tokens, rate windows, faults and the delivery log; guarded by `lock`."""

    def __init__(self, client_id: str, client_secret: str, tenant: str, settings: Settings) -> None:
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self.client_id = client_id
        self.client_secret = client_secret
        self.tenant = tenant
        self.settings = settings
        self.rng = random.Random(7)
        self.tokens: dict[str, Token] = {}
        self.windows: dict[str, deque[float]] = {}
        self.faults: dict[str, Trigger] = {}
        self.requests = Counters()
        self.clear()

    def clear(self) -> None:
        """Forget every record; tokens and faults survive so a running client keeps working."""
        with self.lock:
            self.ids = {kind: itertools.count(1) for kind in self.collections()}
            self.users: dict[int, dict[str, Any]] = {}
            self.assignments: dict[int, dict[str, Any]] = {}
            self.locations: dict[int, dict[str, Any]] = {}
            self.services: dict[int, dict[str, Any]] = {}
            self.clients: dict[int, dict[str, Any]] = {}
            self.appointments: dict[int, dict[str, Any]] = {}
            self.absences: dict[int, dict[str, Any]] = {}
            self.webhooks: dict[int, dict[str, Any]] = {}
            self.attendee_ids = itertools.count(1)
            self.deliveries: dict[str, dict[str, Any]] = {}
            # Every deleted absence with when it went: a checker can ask whether each removal
            # of a busy block had a reason (`removed_absences` in /_emulator/state).
            self.removed: list[dict[str, Any]] = []
            self.outbox: list[tuple[float, int, str, bool]] = []  # (due, seq, delivery, is_copy)
            # reorder fault: (held since, delivery, batch, hold_seconds)
            self.held: list[tuple[float, str, int, float]] = []
            self.sequence = itertools.count()

    @staticmethod
    def collections() -> tuple[str, ...]:
        return (
            "users",
            "assignments",
            "locations",
            "services",
            "clients",
            "appointments",
            "absences",
            "webhooks",
        )

    def table(self, kind: str) -> dict[int, dict[str, Any]]:
        return getattr(self, kind)

    def insert(self, kind: str, record: dict[str, Any]) -> dict[str, Any]:
        """Add a record with a fresh id, version 1 and both stamps; used by seed and creates."""
        now = utcnow()
        record = {"id": next(self.ids[kind]), **record, "created_at": now, "updated_at": now}
        record["version"] = 1
        self.table(kind)[record["id"]] = record
        return record

    def get(self, kind: str, record_id: int) -> dict[str, Any]:
        record = self.table(kind).get(record_id)
        if record is None:
            raise ApiError(404, "not_found", "Not found", f"no {kind} with id {record_id}")
        return record

    # ---------------------------------------------------------------- auth and limits

    def issue_token(self, client_id: str, client_secret: str, scope: str | None) -> dict[str, Any]:
        """OAuth2 client credentials; raises ApiError carrying an OAuth error body."""
        good_id = hmac.compare_digest(client_id.encode(), self.client_id.encode())
        good_secret = hmac.compare_digest(client_secret.encode(), self.client_secret.encode())
        if not (good_id and good_secret):
            raise ApiError(401, "invalid_client", "invalid_client", "unknown client or bad secret")
        requested = set(scope.split()) if scope else set(SCOPES)
        unknown = sorted(requested - set(SCOPES))
        if unknown:
            raise ApiError(400, "invalid_scope", "invalid_scope", f"unknown scopes {unknown}")
        with self.lock:
            token = secrets.token_urlsafe(32)
            lifetime = self.settings.token_lifetime
            self.tokens[token] = Token(client_id, frozenset(requested), time.time() + lifetime)
            return {
                "token_type": "Bearer",
                "expires_in": lifetime,
                "access_token": token,
                "scope": " ".join(sorted(requested)),
            }

    def authenticate(self, token: str) -> Token | None:
        with self.lock:
            found = self.tokens.get(token)
            if found is None or found.expires_at <= time.time():
                return None
            return found

    def expire_tokens(self) -> int:
        with self.lock:
            now = time.time()
            for token in self.tokens.values():
                token.expires_at = min(token.expires_at, now)
            return len(self.tokens)

    def take_rate(self, client_id: str) -> tuple[bool, int, int]:
        """Count one request in the client's 60 s window: (allowed, remaining, retry_after)."""
        with self.lock:
            now = time.monotonic()
            window = self.windows.setdefault(client_id, deque())
            while window and window[0] <= now - 60:
                window.popleft()
            limit = self.settings.rate_limit
            if len(window) >= limit:
                return False, 0, max(1, int(window[0] + 60 - now + 0.999))
            window.append(now)
            return True, limit - len(window), 0

    def fire(self, kind: str) -> dict[str, Any] | None:
        """If fault `kind` is armed and fires now, its parameters; spent faults disarm."""
        with self.lock:
            trigger = self.faults.get(kind)
            if trigger is None or not trigger.fire(self.rng):
                return None
            if trigger.spent:
                del self.faults[kind]
            return trigger.params

    # ---------------------------------------------------------------- rendering

    def takes_appointments(self, user_id: int) -> bool:
        """Coconut's rule: at least one assignment with a location and a service."""
        return any(
            a["user_id"] == user_id and a["location_id"] and a["service_ids"]
            for a in self.assignments.values()
        )

    def attributes(self, kind: str, record: dict[str, Any]) -> dict[str, Any]:
        """The JSON:API attributes of one record, times formatted as the contract says."""
        out: dict[str, Any] = {}
        for key, value in record.items():
            if key in HIDDEN_FIELDS:
                continue
            if key in TIME_FIELDS:
                out[key] = fmt_local(value, record["timezone"])
            elif key in STAMP_FIELDS:
                out[key] = fmt_utc(value)
            else:
                out[key] = list(value) if isinstance(value, list | tuple) else value
        if kind == "users":
            out["takes_appointments"] = self.takes_appointments(record["id"])
        return out

    def attendee(self, attendee: dict[str, Any]) -> dict[str, Any]:
        client = self.clients[attendee["client_id"]]
        fields = ("first_name", "last_name", "email", "cell_phone", "phone", "lang", "external_id")
        return {
            "client_id": client["id"],
            **{name: client[name] for name in fields},
            "status": attendee["status"],
        }

    # ---------------------------------------------------------------- absences

    def create_absence(self, attrs: dict[str, Any]) -> dict[str, Any]:
        allowed = {
            "user_id",
            "start",
            "end",
            "all_day",
            "timezone",
            "title",
            "notes",
            "source",
            "external_provider",
            "external_id",
            "external_version",
        }
        check_keys(attrs, allowed, required=("user_id", "start", "end"))
        with self.lock:
            user_id = want_int(attrs["user_id"], "/data/attributes/user_id")
            user = self.users.get(user_id)
            if user is None:
                raise invalid(f"no user with id {user_id}", "/data/attributes/user_id")
            self.require_bookable(user)
            source = attrs.get("source", "external")
            if source not in ("external", "coconut"):
                raise invalid(
                    f"source must be 'external' or 'coconut', got {source!r}",
                    "/data/attributes/source",
                )
            record = {
                "user_id": user_id,
                "timezone": zone(
                    attrs.get("timezone", user["timezone"]), "/data/attributes/timezone"
                ),
                "all_day": want_bool(attrs.get("all_day", False), "/data/attributes/all_day"),
                "title": want_str(attrs.get("title", "Busy"), "/data/attributes/title"),
                "notes": want_str(attrs.get("notes"), "/data/attributes/notes", nullable=True),
                "source": source,
            }
            record["start"], record["end"] = self.span(attrs, record["timezone"])
            if source == "external":
                external_id = want_str(attrs.get("external_id"), "/data/attributes/external_id")
                if not external_id:
                    raise invalid("external_id is required", "/data/attributes/external_id")
                provider = attrs.get("external_provider", "microsoft_exchange")
                record["external_provider"] = want_str(
                    provider, "/data/attributes/external_provider"
                )
                record["external_id"] = external_id
                record["external_version"] = want_str(
                    attrs.get("external_version"),
                    "/data/attributes/external_version",
                    nullable=True,
                )
                for other in self.absences.values():
                    if other["user_id"] == user_id and other.get("external_id") == external_id:
                        raise ApiError(
                            409,
                            "duplicate_external_id",
                            "Duplicate external id",
                            f"user {user_id} already has an absence with this external_id",
                            pointer="/data/attributes/external_id",
                            meta={"existing_id": str(other["id"])},
                        )
            else:
                for name in ("external_id", "external_provider", "external_version"):
                    if attrs.get(name) is not None:
                        raise invalid(
                            f"{name} is only for source 'external'", f"/data/attributes/{name}"
                        )
                record.update(external_provider=None, external_id=None, external_version=None)
            absence = self.insert("absences", record)
            if source == "coconut":
                self.emit("absence.created", "absences", absence, {})
            return absence

    def update_absence(
        self, absence_id: int, attrs: dict[str, Any], if_match: int | None
    ) -> dict[str, Any]:
        editable = {"start", "end", "all_day", "timezone", "title", "notes", "external_version"}
        read_only = {"user_id", "source", "external_id", "external_provider"}
        with self.lock:
            absence = self.get("absences", absence_id)
            self.check_version(absence, if_match)
            check_keys(attrs, editable, read_only=read_only)
            changes: dict[str, Any] = {}
            if "timezone" in attrs:
                changes["timezone"] = zone(attrs["timezone"], "/data/attributes/timezone")
            timezone = changes.get("timezone", absence["timezone"])
            if "start" in attrs or "end" in attrs:
                merged = {
                    "start": attrs.get("start", fmt_local(absence["start"], timezone)),
                    "end": attrs.get("end", fmt_local(absence["end"], timezone)),
                }
                changes["start"], changes["end"] = self.span(merged, timezone)
            if "all_day" in attrs:
                changes["all_day"] = want_bool(attrs["all_day"], "/data/attributes/all_day")
            for name, nullable in (("title", False), ("notes", True), ("external_version", True)):
                if name in attrs:
                    changes[name] = want_str(attrs[name], f"/data/attributes/{name}", nullable)
            changed = self.apply(absence, changes)
            if changed and absence["source"] == "coconut":
                self.emit("absence.updated", "absences", absence, {"changed": changed})
            return absence

    def delete_absence(self, absence_id: int, if_match: int | None) -> None:
        with self.lock:
            absence = self.get("absences", absence_id)
            self.check_version(absence, if_match)
            del self.absences[absence_id]
            self.removed.append({**absence, "removed_at": utcnow()})
            if absence["source"] == "coconut":
                gone = {**absence, "version": absence["version"] + 1, "updated_at": utcnow()}
                self.emit("absence.deleted", "absences", gone, {})

    def span(self, attrs: dict[str, Any], timezone: str) -> tuple[datetime, datetime]:
        """Parse start/end and enforce start < end (Coconut drops zero-length blocks)."""
        start = parse_time(attrs["start"], timezone, "/data/attributes/start")
        end = parse_time(attrs["end"], timezone, "/data/attributes/end")
        if start >= end:
            raise invalid("start must be before end", "/data/attributes/start")
        limit = self.settings.max_absence_days
        if limit is not None and end - start > timedelta(days=limit):
            raise invalid(f"absences may last at most {limit} days", "/data/attributes/end")
        return start, end

    def require_bookable(self, user: dict[str, Any]) -> None:
        if not user["active"] or not self.takes_appointments(user["id"]):
            raise invalid(
                f"user {user['id']} does not take appointments",
                "/data/attributes/user_id",
                code="user_not_bookable",
            )

    def check_version(self, record: dict[str, Any], if_match: int | None) -> None:
        """If-Match: a stale version (or the armed fault) is a 409 carrying the current one."""
        if if_match is None:
            return
        forced = self.fire("if_match_conflict") is not None
        if forced or if_match != record["version"]:
            raise ApiError(
                409,
                "version_conflict",
                "Version conflict",
                f"If-Match {if_match} does not match the current version",
                meta={"current_version": record["version"]},
            )

    def apply(self, record: dict[str, Any], changes: dict[str, Any]) -> list[str]:
        """Write the changes that differ; bump version and updated_at if any did."""
        changed = sorted(k for k, v in changes.items() if record.get(k) != v)
        if changed:
            for key in changed:
                record[key] = changes[key]
            record["version"] += 1
            record["updated_at"] = utcnow()
        return changed

    # ---------------------------------------------------------------- appointments

    def create_appointment(self, attrs: dict[str, Any], client_ids: list[int]) -> dict[str, Any]:
        allowed = {
            "start",
            "end",
            "timezone",
            "staff_id",
            "additional_staff_id",
            "location_id",
            "service_id",
            "notes",
            "meeting_method",
        }
        check_keys(attrs, allowed, required=("start", "staff_id", "location_id", "service_id"))
        with self.lock:
            location = self.reference("locations", attrs["location_id"], "location_id")
            services = self.references("services", attrs["service_id"], "service_id")
            staff_id, additional = self.staff(attrs)
            for client_id in client_ids:
                self.reference("clients", client_id, "attendees")
            timezone = zone(
                attrs.get("timezone", location["timezone"]), "/data/attributes/timezone"
            )
            start = parse_time(attrs["start"], timezone, "/data/attributes/start")
            if "end" in attrs:
                end = parse_time(attrs["end"], timezone, "/data/attributes/end")
            else:
                end = start + timedelta(minutes=sum(s["duration"] for s in services))
            if start >= end:
                raise invalid("start must be before end", "/data/attributes/start")
            method = attrs.get("meeting_method", 3 if location["virtual"] else 1)
            if method not in MEETING_METHODS:
                raise invalid(
                    f"meeting_method must be 1-4, got {method!r}", "/data/attributes/meeting_method"
                )
            appointment = self.insert(
                "appointments",
                self.new_appointment(
                    start=start,
                    end=end,
                    timezone=timezone,
                    staff_id=staff_id,
                    additional_staff_id=additional,
                    location_id=location["id"],
                    service_id=[s["id"] for s in services],
                    notes=want_str(attrs.get("notes"), "/data/attributes/notes", nullable=True),
                    meeting_method=method,
                    client_ids=client_ids,
                ),
            )
            self.emit("appointment.created", "appointments", appointment, {})
            return appointment

    def new_appointment(self, *, client_ids: list[int], **fields: Any) -> dict[str, Any]:
        """The record shape of an appointment; shared by seed and the create endpoint."""
        code = "".join(self.rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZ23456789") for _ in range(8))
        video = fields["meeting_method"] == 3
        return {
            **fields,
            "status": "scheduled",
            "booked_through": 4,
            "meeting_url": f"https://meet.{self.tenant}/{code.lower()}" if video else None,
            "confirmation_code": code,
            "cancelled_at": None,
            "attendees": [
                {"id": next(self.attendee_ids), "client_id": cid, "status": "booked"}
                for cid in client_ids
            ],
        }

    def update_appointment(
        self, appointment_id: int, attrs: dict[str, Any], if_match: int | None
    ) -> dict[str, Any]:
        editable = {
            "start",
            "end",
            "timezone",
            "staff_id",
            "additional_staff_id",
            "location_id",
            "service_id",
            "notes",
            "meeting_method",
            "status",
        }
        with self.lock:
            appt = self.get("appointments", appointment_id)
            self.check_version(appt, if_match)
            check_keys(attrs, editable, read_only={"confirmation_code", "booked_through"})
            if appt["status"] == "cancelled" and set(attrs) - {"notes"}:
                raise invalid("a cancelled appointment can only have its notes edited", "/data")
            changes: dict[str, Any] = {}
            if "timezone" in attrs:
                changes["timezone"] = zone(attrs["timezone"], "/data/attributes/timezone")
            timezone = changes.get("timezone", appt["timezone"])
            if "start" in attrs:
                changes["start"] = parse_time(attrs["start"], timezone, "/data/attributes/start")
                changes["end"] = changes["start"] + (appt["end"] - appt["start"])
            if "end" in attrs:
                changes["end"] = parse_time(attrs["end"], timezone, "/data/attributes/end")
            if changes.get("start", appt["start"]) >= changes.get("end", appt["end"]):
                raise invalid("start must be before end", "/data/attributes/start")
            if "staff_id" in attrs or "additional_staff_id" in attrs:
                merged = {
                    "staff_id": attrs.get("staff_id", appt["staff_id"]),
                    "additional_staff_id": attrs.get(
                        "additional_staff_id", appt["additional_staff_id"]
                    ),
                }
                changes["staff_id"], changes["additional_staff_id"] = self.staff(merged)
            if "location_id" in attrs:
                changes["location_id"] = self.reference(
                    "locations", attrs["location_id"], "location_id"
                )["id"]
            if "service_id" in attrs:
                services = self.references("services", attrs["service_id"], "service_id")
                changes["service_id"] = [s["id"] for s in services]
            if "notes" in attrs:
                changes["notes"] = want_str(attrs["notes"], "/data/attributes/notes", nullable=True)
            if "meeting_method" in attrs:
                if attrs["meeting_method"] not in MEETING_METHODS:
                    raise invalid("meeting_method must be 1-4", "/data/attributes/meeting_method")
                changes["meeting_method"] = attrs["meeting_method"]
            if "status" in attrs:
                status = attrs["status"]
                if status not in APPOINTMENT_STATUSES or status == "scheduled":
                    raise invalid(
                        f"status can become cancelled, completed or no_show, got {status!r}",
                        "/data/attributes/status",
                    )
                changes["status"] = status
            previous_staff = [appt["staff_id"], *appt["additional_staff_id"]]
            changed = self.apply(appt, changes)
            if not changed:
                return appt
            if appt["status"] == "cancelled" and "status" in changed:
                appt["cancelled_at"] = appt["updated_at"]
                for attendee in appt["attendees"]:
                    attendee["status"] = "cancelled"
            self.emit_appointment_change(appt, changed, previous_staff)
            return appt

    def emit_appointment_change(
        self, appt: dict[str, Any], changed: list[str], previous_staff: list[int]
    ) -> None:
        """`updated` is the catch-all; specific events ride along (research §7.5)."""
        if "status" in changed and appt["status"] == "cancelled":
            self.emit("appointment.cancelled", "appointments", appt, {"changed": changed})
        if {"start", "end"} & set(changed):
            self.emit("appointment.rescheduled", "appointments", appt, {"changed": changed})
        if {"staff_id", "additional_staff_id"} & set(changed):
            meta = {"changed": changed, "previous_staff_ids": previous_staff}
            self.emit("appointment.reassigned", "appointments", appt, meta)
        self.emit("appointment.updated", "appointments", appt, {"changed": changed})

    def cancel_attendee(self, appointment_id: int, attendee_id: int) -> dict[str, Any]:
        """One attendee of a group appointment cancels; the last one cancels the appointment."""
        with self.lock:
            appt = self.get("appointments", appointment_id)
            attendee = next((a for a in appt["attendees"] if a["id"] == attendee_id), None)
            if attendee is None:
                raise ApiError(404, "not_found", "Not found", f"no attendee {attendee_id} here")
            if attendee["status"] == "cancelled":
                return appt
            attendee["status"] = "cancelled"
            if all(a["status"] == "cancelled" for a in appt["attendees"]):
                return self.update_appointment(appointment_id, {"status": "cancelled"}, None)
            appt["version"] += 1
            appt["updated_at"] = utcnow()
            self.emit("appointment.updated", "appointments", appt, {"changed": ["attendees"]})
            return appt

    def staff(self, attrs: dict[str, Any]) -> tuple[int, list[int]]:
        primary = want_int(attrs["staff_id"], "/data/attributes/staff_id")
        extra = attrs.get("additional_staff_id", [])
        if not isinstance(extra, list):
            raise invalid(
                "additional_staff_id must be a list", "/data/attributes/additional_staff_id"
            )
        extra = [want_int(x, "/data/attributes/additional_staff_id") for x in extra]
        if primary in extra or len(set(extra)) != len(extra):
            raise invalid("staff may appear once", "/data/attributes/additional_staff_id")
        for user_id, name in [(primary, "staff_id")] + [(x, "additional_staff_id") for x in extra]:
            user = self.users.get(user_id)
            if user is None or not user["active"] or not self.takes_appointments(user_id):
                raise invalid(
                    f"user {user_id} does not take appointments",
                    f"/data/attributes/{name}",
                    code="user_not_bookable",
                )
        return primary, extra

    def reference(self, kind: str, value: Any, name: str) -> dict[str, Any]:
        pointer = f"/data/attributes/{name}"
        record = self.table(kind).get(want_int(value, pointer))
        if record is None:
            raise invalid(f"no {kind} with id {value}", pointer)
        return record

    def references(self, kind: str, value: Any, name: str) -> list[dict[str, Any]]:
        values = value if isinstance(value, list) else [value]
        if not values:
            raise invalid(f"{name} must not be empty", f"/data/attributes/{name}")
        return [self.reference(kind, v, name) for v in values]

    # ---------------------------------------------------------------- users

    def update_user(
        self,
        user_id: int,
        attrs: dict[str, Any],
        assignment_ids: list[int] | None,
        if_match: int | None,
    ) -> dict[str, Any]:
        editable = {"email", "first_name", "last_name", "timezone", "active", "lang"}
        read_only = {"role", "username", "external_id", "takes_appointments"}
        with self.lock:
            user = self.get("users", user_id)
            self.check_version(user, if_match)
            check_keys(attrs, editable, read_only=read_only)
            changes: dict[str, Any] = {}
            if "email" in attrs:
                email = want_str(attrs["email"], "/data/attributes/email")
                if "@" not in email or email != email.strip():
                    raise invalid(f"not an email address, got {email!r}", "/data/attributes/email")
                taken = any(
                    u["email"].lower() == email.lower() and u["id"] != user_id
                    for u in self.users.values()
                )
                if taken:
                    raise invalid("email already used", "/data/attributes/email", "email_taken")
                changes["email"] = email
            for name in ("first_name", "last_name", "lang"):
                if name in attrs:
                    changes[name] = want_str(attrs[name], f"/data/attributes/{name}")
            if "timezone" in attrs:
                changes["timezone"] = zone(attrs["timezone"], "/data/attributes/timezone")
            if "active" in attrs:
                changes["active"] = want_bool(attrs["active"], "/data/attributes/active")
            changed = self.apply(user, changes)
            if assignment_ids is not None:
                mine = {a["id"] for a in self.assignments.values() if a["user_id"] == user_id}
                strangers = sorted(set(assignment_ids) - mine)
                if strangers:
                    raise invalid(
                        f"assignments {strangers} do not belong to user {user_id}",
                        "/data/relationships/assignments",
                    )
                if mine - set(assignment_ids):
                    for removed in mine - set(assignment_ids):
                        del self.assignments[removed]
                    if not changed:
                        user["version"] += 1
                        user["updated_at"] = utcnow()
                    changed = sorted([*changed, "assignments"])
            notable = [c for c in changed if c in ("email", "timezone", "active", "assignments")]
            if notable:
                self.emit("user.updated", "users", user, {"changed": changed})
            return user

    # ---------------------------------------------------------------- webhooks

    def create_webhook(self, attrs: dict[str, Any]) -> dict[str, Any]:
        check_keys(attrs, {"url", "events", "secret", "active"}, required=("url", "events"))
        with self.lock:
            secret = attrs.get("secret")
            record = {
                "url": check_url(attrs["url"]),
                "events": check_events(attrs["events"]),
                "active": want_bool(attrs.get("active", True), "/data/attributes/active"),
                "failure_count": 0,
                "disabled_reason": None,
                "secret": check_secret(secret) if secret is not None else secrets.token_hex(24),
            }
            return self.insert("webhooks", record)

    def update_webhook(
        self, webhook_id: int, attrs: dict[str, Any], if_match: int | None
    ) -> dict[str, Any]:
        with self.lock:
            hook = self.get("webhooks", webhook_id)
            self.check_version(hook, if_match)
            check_keys(attrs, {"url", "events", "secret", "active"}, read_only={"failure_count"})
            changes: dict[str, Any] = {}
            if "url" in attrs:
                changes["url"] = check_url(attrs["url"])
            if "events" in attrs:
                changes["events"] = check_events(attrs["events"])
            if "secret" in attrs:
                changes["secret"] = check_secret(attrs["secret"])
            if "active" in attrs:
                changes["active"] = want_bool(attrs["active"], "/data/attributes/active")
                if changes["active"]:
                    changes.update(failure_count=0, disabled_reason=None)
            self.apply(hook, changes)
            return hook

    def delete_webhook(self, webhook_id: int) -> None:
        with self.lock:
            self.get("webhooks", webhook_id)
            del self.webhooks[webhook_id]
            self.abandon(webhook_id)

    def disable_webhook(self, hook: dict[str, Any], reason: str) -> None:
        hook.update(active=False, disabled_reason=reason)
        hook["version"] += 1
        hook["updated_at"] = utcnow()
        self.abandon(hook["id"])

    def abandon(self, webhook_id: int) -> None:
        for delivery in self.deliveries.values():
            if delivery["webhook_id"] == webhook_id and delivery["status"] == "pending":
                delivery["status"] = "abandoned"

    def ping(self, webhook_id: int) -> dict[str, Any]:
        with self.lock:
            hook = self.get("webhooks", webhook_id)
            if not hook["active"]:
                raise invalid(
                    "webhook is disabled; PATCH active=true first", "/data/attributes/active"
                )
            return self.enqueue(hook, "ping", {"type": "webhooks", "id": str(hook["id"])}, {})

    # ---------------------------------------------------------------- events and deliveries

    def emit(self, event: str, kind: str, record: dict[str, Any], meta: dict[str, Any]) -> None:
        """Queue one delivery per active subscription to `event`; the sender threads post it."""
        snapshot = {
            "type": kind,
            "id": str(record["id"]),
            "attributes": self.snapshot(kind, record),
        }
        for hook in self.webhooks.values():
            if hook["active"] and event in hook["events"]:
                self.enqueue(hook, event, snapshot, meta)

    def snapshot(self, kind: str, record: dict[str, Any]) -> dict[str, Any]:
        """The thin payload: key fields and `version`; receivers GET the rest."""
        keys = {
            "appointments": (
                "status",
                "start",
                "end",
                "timezone",
                "staff_id",
                "additional_staff_id",
                "location_id",
                "service_id",
            ),
            "absences": ("user_id", "start", "end", "all_day", "timezone", "source"),
            "users": ("email", "timezone", "active", "takes_appointments"),
        }[kind]
        attrs = self.attributes(kind, record)
        return {k: attrs[k] for k in (*keys, "updated_at", "version")}

    def enqueue(
        self, hook: dict[str, Any], event: str, data: dict[str, Any], meta: dict[str, Any]
    ) -> dict[str, Any]:
        delivery_id = str(uuid.uuid4())
        created = utcnow()
        payload = {
            "id": delivery_id,
            "type": event,
            "created_at": fmt_utc(created),
            "data": data,
            "meta": {**meta, "tenant": self.tenant},
        }
        delivery = {
            "id": delivery_id,
            "webhook_id": hook["id"],
            "event": event,
            "created_at": created,
            "status": "pending",
            "body": json_bytes(payload),
            "attempts": [],
            "faults": [],
        }
        self.deliveries[delivery_id] = delivery
        if self.fire("delivery_drop") is not None:
            delivery.update(status="dropped", faults=["drop"])
            return delivery
        due = time.monotonic()
        delay = self.fire("delivery_delay")
        if delay is not None:
            due += delay["seconds"]
            delivery["faults"].append("delay")
        if self.fire("delivery_duplicate") is not None:
            delivery["faults"].append("duplicate")
            self.schedule(delivery_id, due, is_copy=True)
        reorder = self.fire("delivery_reorder")
        if reorder is not None:
            delivery["faults"].append("reorder")
            self.held.append(
                (time.monotonic(), delivery_id, reorder["batch"], reorder["hold_seconds"])
            )
        else:
            self.schedule(delivery_id, due, is_copy=False)
        self.changed.notify_all()
        return delivery

    def schedule(self, delivery_id: str, due: float, *, is_copy: bool) -> None:
        heapq.heappush(self.outbox, (due, next(self.sequence), delivery_id, is_copy))
        self.changed.notify_all()

    # ---------------------------------------------------------------- inspection

    def state(self, base_url: str) -> dict[str, Any]:
        """Everything, for tests and the demo: `GET /_emulator/state`."""
        with self.lock:
            out: dict[str, Any] = {}
            for kind in self.collections():
                rows = []
                for record in self.table(kind).values():
                    row = {"id": record["id"], **self.attributes(kind, record)}
                    if kind == "appointments":
                        row["attendees"] = [
                            {"id": a["id"], **self.attendee(a)} for a in record["attendees"]
                        ]
                    if kind == "webhooks":
                        row["deliveries"] = [
                            delivery_json(d)
                            for d in self.deliveries.values()
                            if d["webhook_id"] == record["id"]
                        ]
                    rows.append(row)
                out[kind] = rows
            out["removed_absences"] = [
                {
                    "id": r["id"],
                    **self.attributes("absences", r),
                    "removed_at": fmt_utc(r["removed_at"]),
                }
                for r in self.removed
            ]
            out["requests"] = {
                "total": self.requests.total,
                "by_route": dict(self.requests.by_route),
                "by_status": dict(self.requests.by_status),
            }
            out["faults"] = {kind: t.as_json() for kind, t in self.faults.items()}
            out["settings"] = self.settings.as_json()
            out["tokens"] = {
                "issued": len(self.tokens),
                "valid": sum(t.expires_at > time.time() for t in self.tokens.values()),
            }
            out["base_url"] = base_url
            out["tenant"] = self.tenant
            return out


def delivery_json(delivery: dict[str, Any]) -> dict[str, Any]:
    """A delivery as the log shows it: status, faults applied, every attempt's outcome."""
    return {
        "id": delivery["id"],
        "webhook_id": delivery["webhook_id"],
        "event": delivery["event"],
        "status": delivery["status"],
        "created_at": fmt_utc(delivery["created_at"]),
        "faults": list(delivery["faults"]),
        "attempts": [dict(a) for a in delivery["attempts"]],
        "payload": delivery["body"].decode(),
    }


def json_bytes(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


def check_keys(
    attrs: dict[str, Any],
    allowed: set[str],
    *,
    required: tuple[str, ...] = (),
    read_only: set[str] | frozenset[str] = frozenset(),
) -> None:
    """Strict attribute sets: unknown names and read-only names are 422s, not ignored."""
    for name in sorted(attrs):
        pointer = f"/data/attributes/{name}"
        if name in read_only or name in ("id", "version", "created_at", "updated_at"):
            raise invalid(f"{name} is read-only", pointer, code="read_only")
        if name not in allowed:
            raise invalid(f"unknown attribute {name!r}", pointer, code="unknown_attribute")
    for name in required:
        if attrs.get(name) is None:
            raise invalid(f"{name} is required", f"/data/attributes/{name}", code="required")


def want_int(value: Any, pointer: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid(f"expected an integer, got {value!r}", pointer)
    return value


def want_bool(value: Any, pointer: str) -> bool:
    if not isinstance(value, bool):
        raise invalid(f"expected true or false, got {value!r}", pointer)
    return value


def want_str(value: Any, pointer: str, nullable: bool = False) -> Any:
    if value is None and nullable:
        return None
    if not isinstance(value, str):
        raise invalid(f"expected a string, got {value!r}", pointer)
    return value


def check_url(value: Any) -> str:
    """https only, except plain http to this machine (the emulator's one concession)."""
    pointer = "/data/attributes/url"
    url = want_str(value, pointer)
    parts = urlsplit(url)
    local = parts.hostname in ("127.0.0.1", "localhost", "::1")
    if (parts.scheme == "https" and parts.hostname) or (parts.scheme == "http" and local):
        return url
    raise invalid(f"url must be https (http only to localhost), got {url!r}", pointer)


def check_events(value: Any) -> list[str]:
    pointer = "/data/attributes/events"
    if not isinstance(value, list) or not value:
        raise invalid("events must be a non-empty list", pointer)
    unknown = [e for e in value if e not in EVENTS]
    if unknown:
        raise invalid(f"unknown events {unknown}; known: {list(EVENTS)}", pointer)
    return sorted(set(value))


def check_secret(value: Any) -> str:
    secret = want_str(value, "/data/attributes/secret")
    if len(secret) < 16:
        raise invalid("secret must be at least 16 characters", "/data/attributes/secret")
    return secret
