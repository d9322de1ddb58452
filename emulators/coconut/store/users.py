"""Staff: `PATCH /users/{id}` edits a user's attributes and can drop assignments.

A change that matters to a calendar sync (email, time zone, active, assignments) sends
`user.updated`; a new language or name does not.
"""

from __future__ import annotations

from typing import Any

from emulators.coconut.jsonapi import invalid, utcnow, zone
from emulators.coconut.store.checks import check_keys, want_bool, want_str
from emulators.coconut.store.records import Record
from emulators.coconut.store.webhooks import WebhookRecords

USER_EDITABLE = {"email", "first_name", "last_name", "timezone", "active", "lang"}
USER_READ_ONLY = {"role", "username", "external_id", "takes_appointments"}
NOTABLE = ("email", "timezone", "active", "assignments")


class UserRecords(WebhookRecords):
    def update_user(
        self,
        user_id: int,
        attrs: dict[str, Any],
        assignment_ids: list[int] | None,
        if_match: int | None,
    ) -> Record:
        with self.lock:
            user = self.get("users", user_id)
            self.check_version(user, if_match)
            check_keys(attrs, USER_EDITABLE, read_only=USER_READ_ONLY)
            changed = self.apply(user, self.user_changes(user_id, attrs))
            if assignment_ids is not None:
                changed = self.keep_assignments(user, assignment_ids, changed)
            notable = [c for c in changed if c in NOTABLE]
            if notable:
                self.emit("user.updated", "users", user, {"changed": changed})
            return user

    def user_changes(self, user_id: int, attrs: dict[str, Any]) -> dict[str, Any]:
        changes: dict[str, Any] = {}
        if "email" in attrs:
            changes["email"] = self.free_email(user_id, attrs["email"])
        for name in ("first_name", "last_name", "lang"):
            if name in attrs:
                changes[name] = want_str(attrs[name], f"/data/attributes/{name}")
        if "timezone" in attrs:
            changes["timezone"] = zone(attrs["timezone"], "/data/attributes/timezone")
        if "active" in attrs:
            changes["active"] = want_bool(attrs["active"], "/data/attributes/active")
        return changes

    def free_email(self, user_id: int, value: Any) -> str:
        """An address no other user has (compared case-insensitively)."""
        email = want_str(value, "/data/attributes/email")
        if "@" not in email or email != email.strip():
            raise invalid(f"not an email address, got {email!r}", "/data/attributes/email")
        taken = any(
            u["email"].lower() == email.lower() and u["id"] != user_id for u in self.users.values()
        )
        if taken:
            raise invalid("email already used", "/data/attributes/email", "email_taken")
        return email

    def keep_assignments(
        self, user: Record, assignment_ids: list[int], changed: list[str]
    ) -> list[str]:
        """The user keeps only the listed assignments, which must be theirs."""
        user_id = user["id"]
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
        return changed
