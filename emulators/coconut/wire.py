"""What every Coconut route reads and writes: the store, JSON:API bodies, If-Match, answers.

Request bodies are checked strictly (media type, JSON, `data.type`, `data.id`), because a kind
emulator hides the client bugs the real service would expose.
"""

from __future__ import annotations

from typing import Any

from flask import Response, current_app, json, request

from emulators.coconut import render
from emulators.coconut.jsonapi import ApiError
from emulators.coconut.store import Store

API = "/api/v2/b2b"
JSONAPI = "application/vnd.api+json"


def store() -> Store:
    return current_app.extensions["coconut_store"]  # type: ignore[no-any-return]


def base_url() -> str:
    return request.host_url.rstrip("/") + API


def document(body: dict[str, Any], status: int = 200) -> Response:
    return Response(json.dumps(body), status=status, mimetype=JSONAPI)


def record_document(kind: str, record: dict[str, Any], status: int = 200) -> Response:
    """`{"data": <resource>}` for one record; the caller holds the store's lock."""
    return document({"data": render.record_json(store(), kind, record, base_url())}, status)


def one(kind: str, record_id: int) -> Response:
    """`GET /<kind>/<id>`."""
    with store().lock:
        return record_document(kind, store().get(kind, record_id))


def created(response: Response, kind: str, record_id: int) -> Response:
    """A 201 says where the new resource lives."""
    response.headers["Location"] = f"{base_url()}/{kind}/{record_id}"
    return response


def bad_parameter(parameter: str, detail: str) -> ApiError:
    return ApiError(
        400, "invalid_parameter", "Invalid query parameter", detail, parameter=parameter
    )


def if_match() -> int | None:
    """`If-Match: 7` or `If-Match: "7"`; anything else is the client's mistake."""
    raw = request.headers.get("If-Match")
    if raw is None:
        return None
    value = raw.strip().strip('"')
    if not value.isdigit():
        raise ApiError(
            400,
            "invalid_header",
            "Invalid If-Match",
            f"If-Match must be a resource version number, got {raw[:40]!r}",
        )
    return int(value)


def request_data(kind: str, record_id: int | None) -> dict[str, Any]:
    """The `data` member of a JSON:API request body, checked for type and id."""
    mimetype = request.mimetype
    if mimetype not in ("application/json", JSONAPI):
        raise ApiError(
            415,
            "unsupported_media_type",
            "Unsupported media type",
            f"send application/json or {JSONAPI}, got {mimetype or 'nothing'!r}",
        )
    try:
        body = json.loads(request.get_data(cache=True) or b"null")
    except ValueError:
        raise ApiError(
            400, "invalid_json", "Malformed JSON", "the body is not valid JSON"
        ) from None
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, dict):
        raise invalid_document('body must be {"data": {...}}', "/data")
    if data.get("type") != kind:
        raise invalid_document(
            f"data.type must be {kind!r}, got {data.get('type')!r}", "/data/type"
        )
    if record_id is not None and "id" in data and str(data["id"]) != str(record_id):
        raise invalid_document(
            f"data.id {data['id']!r} does not match the URL's {record_id}", "/data/id"
        )
    for member in ("attributes", "relationships"):
        if member in data and not isinstance(data[member], dict):
            raise invalid_document(f"data.{member} must be an object", f"/data/{member}")
    return data


def invalid_document(detail: str, pointer: str) -> ApiError:
    return ApiError(400, "invalid_document", "Invalid document", detail, pointer=pointer)


def relationship_ids(data: dict[str, Any], name: str) -> list[int] | None:
    """The ids in `data.relationships.<name>`, or None when the body does not name it."""
    rel = data.get("relationships", {}).get(name)
    if rel is None:
        return None
    pointer = f"/data/relationships/{name}"
    items = rel.get("data") if isinstance(rel, dict) else None
    if not isinstance(items, list):
        raise ApiError(
            422,
            "validation_failed",
            "Invalid relationship",
            f'{name} must be {{"data": [...]}}',
            pointer=pointer,
        )
    return [numeric_id(item, name, pointer) for item in items]


def numeric_id(item: Any, name: str, pointer: str) -> int:
    raw = item.get("id") if isinstance(item, dict) else None
    if not (isinstance(raw, int) and not isinstance(raw, bool)) and not (
        isinstance(raw, str) and raw.isdigit()
    ):
        raise ApiError(
            422,
            "validation_failed",
            "Invalid relationship",
            f"{name} items need a numeric id, got {item!r}",
            pointer=pointer,
        )
    return int(raw)
