"""Who and where: users (staff), their assignments, locations, services and clients.

Only users can be written (`PATCH /users/{id}`, which may also drop assignments); the rest are
read-only here, as the sync uses them.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response

from emulators.coconut.listing import filters, listing, plain
from emulators.coconut.store import Store
from emulators.coconut.wire import (
    API,
    if_match,
    one,
    record_document,
    relationship_ids,
    request_data,
    store,
)

bp = Blueprint("directory", __name__, url_prefix=API)


@bp.get("/users")
def users() -> Response:
    wanted = filters("users")
    with store().lock:
        rows = [u for u in store().users.values() if user_matches(store(), u, wanted)]
        return listing("users", rows, plain("users"))


@bp.get("/users/<int:user_id>")
def user(user_id: int) -> Response:
    return one("users", user_id)


@bp.patch("/users/<int:user_id>")
def patch_user(user_id: int) -> Response:
    data = request_data("users", user_id)
    assignments = relationship_ids(data, "assignments")
    updated = store().update_user(user_id, data.get("attributes", {}), assignments, if_match())
    with store().lock:
        return record_document("users", updated)


@bp.get("/assignments")
def assignments() -> Response:
    wanted = filters("assignments")
    with store().lock:
        rows = [
            a
            for a in store().assignments.values()
            if "user" not in wanted or a["user_id"] == wanted["user"]
        ]
        return listing("assignments", rows, plain("assignments"))


def read_only_collection(kind: str) -> None:
    """`GET /<kind>` and `GET /<kind>/<id>` for a collection the API only lists."""

    def collection() -> Response:
        filters(kind)
        with store().lock:
            return listing(kind, list(store().table(kind).values()), plain(kind))

    def single(record_id: int) -> Response:
        return one(kind, record_id)

    bp.add_url_rule(f"/{kind}", f"{kind}_list", collection, methods=["GET"])
    bp.add_url_rule(f"/{kind}/<int:record_id>", f"{kind}_one", single, methods=["GET"])


read_only_collection("locations")
read_only_collection("services")


@bp.get("/clients/<int:client_id>")
def client(client_id: int) -> Response:
    return one("clients", client_id)


def user_matches(store: Store, user: dict[str, Any], wanted: dict[str, Any]) -> bool:
    if "email" in wanted and user["email"].lower() != wanted["email"].lower():
        return False
    if "active" in wanted and user["active"] != wanted["active"]:
        return False
    if "updated_since" in wanted and user["updated_at"] < wanted["updated_since"]:
        return False
    takes = wanted.get("takes_appointments")
    if takes is not None and store.takes_appointments(user["id"]) != takes:
        return False
    mine = [a for a in store.assignments.values() if a["user_id"] == user["id"]]
    if "location" in wanted and not any(a["location_id"] == wanted["location"] for a in mine):
        return False
    return "service" not in wanted or any(wanted["service"] in a["service_ids"] for a in mine)
