"""Appointments: list (with `include`), read, book, edit, and cancel one attendee.

Every answer that shows an appointment honours `include=attendees,location,services,users`.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, request

from emulators.coconut import render
from emulators.coconut.jsonapi import ApiError
from emulators.coconut.listing import filters, listing
from emulators.coconut.wire import (
    API,
    bad_parameter,
    base_url,
    created,
    document,
    if_match,
    relationship_ids,
    request_data,
    store,
)

bp = Blueprint("appointments", __name__, url_prefix=API)
INCLUDES = {"attendees", "location", "services", "users"}


def includes() -> set[str]:
    raw = request.args.get("include", "")
    asked = {x for x in raw.split(",") if x}
    unknown = asked - INCLUDES
    if unknown:
        raise bad_parameter("include", f"cannot include {sorted(unknown)}")
    return asked


def appointment_document(appt: dict[str, Any], status: int = 200) -> Response:
    """One appointment and what `include` asks for; the caller holds the store's lock."""
    asked = includes()
    included: dict[str, Any] = {}
    body: dict[str, Any] = {
        "data": render.appointment_json(store(), appt, asked, included, base_url())
    }
    if asked:
        body["included"] = list(included.values())
    return document(body, status)


@bp.get("/appointments")
def appointments() -> Response:
    wanted = filters("appointments")
    asked = includes()
    with store().lock:
        rows = [a for a in store().appointments.values() if appointment_matches(a, wanted)]

        def render_page(chunk: list[dict[str, Any]]) -> tuple[list[Any], list[Any] | None]:
            included: dict[str, Any] = {}
            base = base_url()
            data = [render.appointment_json(store(), a, asked, included, base) for a in chunk]
            return data, list(included.values()) if asked else None

        return listing("appointments", rows, render_page)


@bp.get("/appointments/<int:appointment_id>")
def appointment(appointment_id: int) -> Response:
    with store().lock:
        return appointment_document(store().get("appointments", appointment_id))


@bp.post("/appointments")
def create_appointment() -> Response:
    data = request_data("appointments", None)
    clients = relationship_ids(data, "attendees") or []
    made = store().create_appointment(data.get("attributes", {}), clients)
    with store().lock:
        response = appointment_document(made, 201)
    return created(response, "appointments", made["id"])


@bp.patch("/appointments/<int:appointment_id>")
def patch_appointment(appointment_id: int) -> Response:
    data = request_data("appointments", appointment_id)
    if "relationships" in data:
        raise ApiError(
            422,
            "validation_failed",
            "Invalid document",
            "relationships cannot be changed here",
            pointer="/data/relationships",
        )
    updated = store().update_appointment(appointment_id, data.get("attributes", {}), if_match())
    with store().lock:
        return appointment_document(updated)


@bp.delete("/appointments/<int:appointment_id>/attendees/<int:attendee_id>")
def cancel_attendee(appointment_id: int, attendee_id: int) -> Response:
    updated = store().cancel_attendee(appointment_id, attendee_id)
    with store().lock:
        return appointment_document(updated)


def appointment_matches(appt: dict[str, Any], wanted: dict[str, Any]) -> bool:
    staff = [appt["staff_id"], *appt["additional_staff_id"]]
    checks = (
        ("user", lambda v: v in staff),
        ("location", lambda v: appt["location_id"] == v),
        ("status", lambda v: appt["status"] == v),
        ("start_after", lambda v: appt["start"] >= v),
        ("start_before", lambda v: appt["start"] < v),
        ("updated_since", lambda v: appt["updated_at"] >= v),
    )
    return all(test(wanted[name]) for name, test in checks if name in wanted)
