"""Absences: busy blocks a sync writes (`source: external`) or Coconut made (`source: coconut`)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response

from emulators.coconut.listing import filters, listing, plain
from emulators.coconut.wire import (
    API,
    created,
    if_match,
    one,
    record_document,
    request_data,
    store,
)

bp = Blueprint("absences", __name__, url_prefix=API)


@bp.get("/absences")
def absences() -> Response:
    wanted = filters("absences")
    with store().lock:
        rows = [a for a in store().absences.values() if absence_matches(a, wanted)]
        return listing("absences", rows, plain("absences"))


@bp.get("/absences/<int:absence_id>")
def absence(absence_id: int) -> Response:
    return one("absences", absence_id)


@bp.post("/absences")
def create_absence() -> Response:
    data = request_data("absences", None)
    made = store().create_absence(data.get("attributes", {}))
    with store().lock:
        response = record_document("absences", made, 201)
    return created(response, "absences", made["id"])


@bp.patch("/absences/<int:absence_id>")
def patch_absence(absence_id: int) -> Response:
    data = request_data("absences", absence_id)
    updated = store().update_absence(absence_id, data.get("attributes", {}), if_match())
    with store().lock:
        return record_document("absences", updated)


@bp.delete("/absences/<int:absence_id>")
def delete_absence(absence_id: int) -> Response:
    store().delete_absence(absence_id, if_match())
    return Response(status=204)


def absence_matches(absence: dict[str, Any], wanted: dict[str, Any]) -> bool:
    checks = (
        ("user", lambda v: absence["user_id"] == v),
        ("source", lambda v: absence["source"] == v),
        ("external_id", lambda v: absence.get("external_id") == v),
        ("updated_since", lambda v: absence["updated_at"] >= v),
    )
    return all(test(wanted[name]) for name, test in checks if name in wanted)
