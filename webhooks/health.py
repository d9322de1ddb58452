"""Liveness and readiness: /healthz says the process answers, /readyz that Redis does too."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():  # type: ignore[no-untyped-def]
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz():  # type: ignore[no-untyped-def]
    current_app.extensions["exsync"].redis.ping()
    return jsonify(status="ready")
