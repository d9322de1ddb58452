"""Absences: busy blocks on a staff member's Coconut calendar.

`source: external` blocks are what a sync writes (one per `external_id` and user, a repeat is a
409 naming the existing one); `source: coconut` blocks are made in Coconut and are the only ones
that send webhooks. Every deletion is remembered for `removed_absences` in /_emulator/state.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from emulators.coconut.jsonapi import ApiError, fmt_local, invalid, parse_time, utcnow, zone
from emulators.coconut.store.checks import check_keys, want_bool, want_int, want_str
from emulators.coconut.store.records import Record
from emulators.coconut.store.webhooks import WebhookRecords

EXTERNAL_FIELDS = ("external_provider", "external_id", "external_version")
ABSENCE_FIELDS = {
    "user_id", "start", "end", "all_day", "timezone", "title", "notes", "source",
    *EXTERNAL_FIELDS,
}  # fmt: skip
ABSENCE_EDITABLE = {"start", "end", "all_day", "timezone", "title", "notes", "external_version"}
ABSENCE_READ_ONLY = {"user_id", "source", "external_id", "external_provider"}


class AbsenceRecords(WebhookRecords):
    def create_absence(self, attrs: dict[str, Any]) -> Record:
        check_keys(attrs, ABSENCE_FIELDS, required=("user_id", "start", "end"))
        with self.lock:
            user_id = want_int(attrs["user_id"], "/data/attributes/user_id")
            user = self.users.get(user_id)
            if user is None:
                raise invalid(f"no user with id {user_id}", "/data/attributes/user_id")
            self.require_bookable(user_id, "/data/attributes/user_id")
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
                record.update(self.external_fields(attrs, user_id))
            else:
                record.update(no_external_fields(attrs))
            absence = self.insert("absences", record)
            if source == "coconut":
                self.emit("absence.created", "absences", absence, {})
            return absence

    def external_fields(self, attrs: dict[str, Any], user_id: int) -> dict[str, Any]:
        """Where a synced block came from; its `external_id` is unique per user."""
        external_id = want_str(attrs.get("external_id"), "/data/attributes/external_id")
        if not external_id:
            raise invalid("external_id is required", "/data/attributes/external_id")
        provider = attrs.get("external_provider", "microsoft_exchange")
        fields = {
            "external_provider": want_str(provider, "/data/attributes/external_provider"),
            "external_id": external_id,
            "external_version": want_str(
                attrs.get("external_version"), "/data/attributes/external_version", nullable=True
            ),
        }
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
        return fields

    def update_absence(
        self, absence_id: int, attrs: dict[str, Any], if_match: int | None
    ) -> Record:
        with self.lock:
            absence = self.get("absences", absence_id)
            self.check_version(absence, if_match)
            check_keys(attrs, ABSENCE_EDITABLE, read_only=ABSENCE_READ_ONLY)
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


def no_external_fields(attrs: dict[str, Any]) -> dict[str, Any]:
    """A block made in Coconut has no external reference."""
    for name in ("external_id", "external_provider", "external_version"):
        if attrs.get(name) is not None:
            raise invalid(f"{name} is only for source 'external'", f"/data/attributes/{name}")
    return dict.fromkeys(EXTERNAL_FIELDS)
