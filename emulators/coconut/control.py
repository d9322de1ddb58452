"""`/_emulator/...`: not Coconut. Inspection, faults, token expiry and run-time settings.

No auth, JSON in and out; tests and the demo use these to look inside and to make trouble.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, request

from emulators.coconut import render
from emulators.coconut.faults import FaultSpecError, parse_trigger
from emulators.coconut.jsonapi import ApiError
from emulators.coconut.wire import base_url, document, store

bp = Blueprint("control", __name__, url_prefix="/_emulator")
# setting -> (accepted types, smallest value); mirrors EmulatorSettings in the OpenAPI file.
SETTINGS_TYPES: dict[str, tuple[tuple[type, ...], float]] = {
    "token_lifetime": ((int,), 1),
    "rate_limit": ((int,), 1),
    "retry_scale": ((int, float), 0),
    "max_attempts": ((int,), 1),
    "disable_after": ((int,), 1),
    "max_absence_days": ((int, type(None)), 1),
}


@bp.get("/state")
def state() -> Response:
    return document(render.state(store(), base_url()))


@bp.post("/faults/<kind>")
def arm_fault(kind: str) -> Response:
    body = request.get_json(silent=True)
    try:
        trigger = parse_trigger(kind, {} if body is None and not request.data else body)
    except FaultSpecError as exc:
        raise ApiError(400, "invalid_fault", "Invalid fault", str(exc)) from None
    return document(store().faults.arm(trigger), 201)


@bp.delete("/faults")
def clear_faults() -> Response:
    store().faults.clear()
    return Response(status=204)


@bp.post("/tokens/expire")
def expire_tokens() -> Response:
    return document({"expired": store().tokens.expire()})


@bp.patch("/settings")
def patch_settings() -> Response:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_document", "Invalid body", "body must be a JSON object")
    for name, value in body.items():
        check_setting(name, value)
    with store().lock:
        for name, value in body.items():
            setattr(store().settings, name, value)
        return document(store().settings.as_json())


def check_setting(name: str, value: Any) -> None:
    spec = SETTINGS_TYPES.get(name)
    if spec is None:
        raise ApiError(400, "invalid_setting", "Invalid setting", f"unknown setting {name!r}")
    types, least = spec
    if (
        isinstance(value, bool)
        or not isinstance(value, types)
        or (value is not None and value < least)
    ):
        raise ApiError(
            400, "invalid_setting", "Invalid setting", f"bad value for {name}, got {value!r}"
        )
