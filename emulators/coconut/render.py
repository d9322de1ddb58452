"""Records as the contract (core/coconut/openapi.yaml) shows them, apart from the data.

`attributes` turns a stored record into JSON:API attributes (times in the record's zone, stamps
in UTC, internals hidden); the rest builds resources, webhook payload snapshots, the delivery log
and the `/_emulator/state` document from it. Nothing here changes a record; callers hold the
store's lock.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from emulators.coconut.jsonapi import fmt_local, fmt_utc, resource

if TYPE_CHECKING:
    from emulators.coconut.store import Store
    from emulators.coconut.store.records import Record, Records

TIME_FIELDS = ("start", "end")
STAMP_FIELDS = ("created_at", "updated_at", "cancelled_at")
HIDDEN_FIELDS = {"id", "secret", "attendees"}
CLIENT_FIELDS = ("first_name", "last_name", "email", "cell_phone", "phone", "lang", "external_id")
# The thin webhook payload: key fields and `version`; receivers GET the rest.
SNAPSHOT_FIELDS = {
    "appointments": (
        "status", "start", "end", "timezone", "staff_id", "additional_staff_id", "location_id",
        "service_id",
    ),
    "absences": ("user_id", "start", "end", "all_day", "timezone", "source"),
    "users": ("email", "timezone", "active", "takes_appointments"),
}  # fmt: skip


def attributes(records: Records, kind: str, record: Record) -> dict[str, Any]:
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
        out["takes_appointments"] = records.takes_appointments(record["id"])
    return out


def attendee(records: Records, attendee: Record) -> dict[str, Any]:
    client = records.clients[attendee["client_id"]]
    return {
        "client_id": client["id"],
        **{name: client[name] for name in CLIENT_FIELDS},
        "status": attendee["status"],
    }


def snapshot(records: Records, kind: str, record: Record) -> dict[str, Any]:
    """The thin payload: key fields and `version`; receivers GET the rest."""
    attrs = attributes(records, kind, record)
    return {k: attrs[k] for k in (*SNAPSHOT_FIELDS[kind], "updated_at", "version")}


def record_json(records: Records, kind: str, record: Record, base_url: str) -> dict[str, Any]:
    return resource(kind, record["id"], attributes(records, kind, record), base_url)


def webhook_json(
    records: Records, hook: Record, base_url: str, *, with_secret: bool = False
) -> dict[str, Any]:
    """A subscription; its secret only in the answer to the create."""
    out = record_json(records, "webhooks", hook, base_url)
    if with_secret:
        out["attributes"]["secret"] = hook["secret"]
    return out


def delivery_json(delivery: Record) -> dict[str, Any]:
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


def delivery_resource(delivery: Record) -> dict[str, Any]:
    attrs = delivery_json(delivery)
    attrs.pop("id")
    return {"type": "deliveries", "id": delivery["id"], "attributes": attrs}


def appointment_json(
    records: Records, appt: Record, asked: set[str], included: dict[str, Any], base_url: str
) -> dict[str, Any]:
    """An appointment with its relationships; what `include` asks for goes into `included`."""
    staff = [appt["staff_id"], *appt["additional_staff_id"]]
    rels: dict[str, Any] = {
        "attendees": {
            "data": [{"type": "attendees", "id": str(a["id"])} for a in appt["attendees"]]
        },
        "location": {"data": {"type": "locations", "id": str(appt["location_id"])}},
        "services": {"data": [{"type": "services", "id": str(s)} for s in appt["service_id"]]},
        "users": {"data": [{"type": "users", "id": str(u)} for u in staff]},
    }
    if "attendees" in asked:
        for a in appt["attendees"]:
            # Attendees have no URL of their own: they live inside their appointment.
            included[f"attendees:{a['id']}"] = {
                "type": "attendees",
                "id": str(a["id"]),
                "attributes": attendee(records, a),
            }
    related = {
        "location": [("locations", appt["location_id"])],
        "services": [("services", s) for s in appt["service_id"]],
        "users": [("users", u) for u in staff],
    }
    for name, refs in related.items():
        if name in asked:
            for kind, record_id in refs:
                record = records.table(kind)[record_id]
                included[f"{kind}:{record_id}"] = record_json(records, kind, record, base_url)
    attrs = attributes(records, "appointments", appt)
    return resource("appointments", appt["id"], attrs, base_url, rels)


def state(store: Store, base_url: str) -> dict[str, Any]:
    """Everything, for tests and the demo: `GET /_emulator/state`."""
    with store.lock:
        out: dict[str, Any] = {
            kind: [state_row(store, kind, record) for record in store.table(kind).values()]
            for kind in store.collections()
        }
        out["removed_absences"] = [
            {
                "id": r["id"],
                **attributes(store, "absences", r),
                "removed_at": fmt_utc(r["removed_at"]),
            }
            for r in store.removed
        ]
        out["requests"] = store.requests.as_json()
        out["faults"] = store.faults.describe()
        out["settings"] = store.settings.as_json()
        out["tokens"] = store.tokens.describe()
        out["base_url"] = base_url
        out["tenant"] = store.tenant
        return out


def state_row(store: Store, kind: str, record: Record) -> dict[str, Any]:
    """One record in /_emulator/state: attendees and the delivery log included."""
    row = {"id": record["id"], **attributes(store, kind, record)}
    if kind == "appointments":
        row["attendees"] = [{"id": a["id"], **attendee(store, a)} for a in record["attendees"]]
    if kind == "webhooks":
        row["deliveries"] = [
            delivery_json(d) for d in store.deliveries.values() if d["webhook_id"] == record["id"]
        ]
    return row
