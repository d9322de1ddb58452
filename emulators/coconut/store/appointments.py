"""Appointments: booking, editing, cancelling, and one attendee of a group leaving.

Every change sends `appointment.updated`; a cancellation, a new time and new staff also send
their specific event (research/coconut.md §7.5).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from emulators.coconut.jsonapi import ApiError, invalid, parse_time, utcnow, zone
from emulators.coconut.store.checks import check_keys, want_int, want_str
from emulators.coconut.store.records import Record
from emulators.coconut.store.webhooks import WebhookRecords

APPOINTMENT_STATUSES = ("scheduled", "cancelled", "completed", "no_show")
MEETING_METHODS = (1, 2, 3, 4)
APPOINTMENT_FIELDS = {
    "start", "end", "timezone", "staff_id", "additional_staff_id", "location_id", "service_id",
    "notes", "meeting_method",
}  # fmt: skip
CODE_LETTERS = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"


class AppointmentRecords(WebhookRecords):
    def create_appointment(self, attrs: dict[str, Any], client_ids: list[int]) -> Record:
        required = ("start", "staff_id", "location_id", "service_id")
        check_keys(attrs, APPOINTMENT_FIELDS, required=required)
        with self.lock:
            location = self.reference("locations", attrs["location_id"], "location_id")
            services = self.references("services", attrs["service_id"], "service_id")
            staff_id, additional = self.staff(attrs)
            for client_id in client_ids:
                self.reference("clients", client_id, "attendees")
            timezone, start, end = self.booked_times(attrs, location, services)
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

    @staticmethod
    def booked_times(
        attrs: dict[str, Any], location: Record, services: list[Record]
    ) -> tuple[str, datetime, datetime]:
        """Zone, start and end of a new booking; the end defaults to the services' duration."""
        timezone = zone(attrs.get("timezone", location["timezone"]), "/data/attributes/timezone")
        start = parse_time(attrs["start"], timezone, "/data/attributes/start")
        if "end" in attrs:
            end = parse_time(attrs["end"], timezone, "/data/attributes/end")
        else:
            end = start + timedelta(minutes=sum(s["duration"] for s in services))
        if start >= end:
            raise invalid("start must be before end", "/data/attributes/start")
        return timezone, start, end

    def new_appointment(self, *, client_ids: list[int], **fields: Any) -> Record:
        """The record shape of an appointment; shared by seed and the create endpoint."""
        code = "".join(self.rng.choice(CODE_LETTERS) for _ in range(8))
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
    ) -> Record:
        with self.lock:
            appt = self.get("appointments", appointment_id)
            self.check_version(appt, if_match)
            read_only = {"confirmation_code", "booked_through"}
            check_keys(attrs, APPOINTMENT_FIELDS | {"status"}, read_only=read_only)
            if appt["status"] == "cancelled" and set(attrs) - {"notes"}:
                raise invalid("a cancelled appointment can only have its notes edited", "/data")
            changes = self.appointment_changes(appt, attrs)
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

    def appointment_changes(self, appt: Record, attrs: dict[str, Any]) -> dict[str, Any]:
        """The checked new values of a PATCH, in the order the checks run."""
        changes = self.new_times(appt, attrs)
        if "staff_id" in attrs or "additional_staff_id" in attrs:
            merged = {
                "staff_id": attrs.get("staff_id", appt["staff_id"]),
                "additional_staff_id": attrs.get(
                    "additional_staff_id", appt["additional_staff_id"]
                ),
            }
            changes["staff_id"], changes["additional_staff_id"] = self.staff(merged)
        if "location_id" in attrs:
            location = self.reference("locations", attrs["location_id"], "location_id")
            changes["location_id"] = location["id"]
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
            changes["status"] = new_status(attrs["status"])
        return changes

    @staticmethod
    def new_times(appt: Record, attrs: dict[str, Any]) -> dict[str, Any]:
        """Zone, start and end of a PATCH; a new start alone keeps the duration."""
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
        return changes

    def emit_appointment_change(
        self, appt: Record, changed: list[str], previous_staff: list[int]
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

    def cancel_attendee(self, appointment_id: int, attendee_id: int) -> Record:
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
        """The primary and additional staff, each once and each bookable."""
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
            self.require_bookable(user_id, f"/data/attributes/{name}")
        return primary, extra


def new_status(status: Any) -> str:
    """A PATCH may end an appointment, never put it back to scheduled."""
    if status not in APPOINTMENT_STATUSES or status == "scheduled":
        raise invalid(
            f"status can become cancelled, completed or no_show, got {status!r}",
            "/data/attributes/status",
        )
    return status
