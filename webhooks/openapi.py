"""`/openapi.json` and `/openapi.yaml`: the description of this app's own endpoints.

The document is webhooks/openapi.yaml, shipped as package data; it is read once per process.
"""

from __future__ import annotations

import functools
from importlib.resources import files
from typing import Any

import yaml
from flask import Blueprint, Response, jsonify

bp = Blueprint("openapi", __name__)


@functools.cache
def _text() -> str:
    return files("webhooks").joinpath("openapi.yaml").read_text(encoding="utf-8")


@functools.cache
def document() -> dict[str, Any]:
    """The OpenAPI document as data."""
    return yaml.safe_load(_text())


@bp.get("/openapi.json")
def as_json() -> Response:
    return jsonify(document())


@bp.get("/openapi.yaml")
def as_yaml() -> Response:
    return Response(_text(), mimetype="application/yaml")
