"""Collections: `filter[...]`, `sort`, `page` and `limit`, and `links.next` as the only way on.

Each collection accepts only the filters listed in FILTERS; an unknown filter, parameter or sort
key is a 400, not something to ignore.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from flask import Response, request

from emulators.coconut import render
from emulators.coconut.jsonapi import parse_query_time
from emulators.coconut.wire import bad_parameter, base_url, document, store

DEFAULT_LIMIT = 25
MAX_LIMIT = 100

# filter name -> how to read its value; collections accept only the filters listed here.
Parse = Callable[[str, str], Any]
# rows of one page -> (data, included or None)
Render = Callable[[list[dict[str, Any]]], tuple[list[Any], list[Any] | None]]


def as_int(value: str, parameter: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise bad_parameter(parameter, f"expected an integer, got {value!r}") from None


def as_bool(value: str, parameter: str) -> bool:
    if value in ("true", "1"):
        return True
    if value in ("false", "0"):
        return False
    raise bad_parameter(parameter, f"expected true or false, got {value!r}")


def as_str(value: str, parameter: str) -> str:
    return value


def as_time(value: str, parameter: str) -> datetime:
    return parse_query_time(value, parameter)


FILTERS: dict[str, dict[str, Parse]] = {
    "users": {
        "email": as_str,
        "takes_appointments": as_bool,
        "location": as_int,
        "service": as_int,
        "updated_since": as_time,
        "active": as_bool,
    },
    "assignments": {"user": as_int},
    "locations": {},
    "services": {},
    "appointments": {
        "user": as_int,
        "location": as_int,
        "status": as_str,
        "start_after": as_time,
        "start_before": as_time,
        "updated_since": as_time,
    },
    "absences": {
        "user": as_int,
        "source": as_str,
        "external_id": as_str,
        "updated_since": as_time,
    },
    "webhooks": {},
}
SORTS = {"id", "updated_at", "start"}


def filters(kind: str) -> dict[str, Any]:
    """The collection's `filter[name]=value` parameters, each read by its parser."""
    out: dict[str, Any] = {}
    for name, value in request.args.items():
        if not name.startswith("filter["):
            continue
        key = name[len("filter[") : -1]
        reader = FILTERS[kind].get(key)
        if reader is None:
            raise bad_parameter(name, f"{kind} cannot be filtered by {key!r}")
        out[key] = reader(value, name)
    return out


def plain(kind: str) -> Render:
    """Render a page of records with nothing included."""
    return lambda chunk: ([render.record_json(store(), kind, r, base_url()) for r in chunk], None)


def listing(kind: str, rows: Iterable[dict[str, Any]], render_page: Render) -> Response:
    """Sort, page and render; `links.next` is the only way on, as the contract says."""
    page, limit = page_args()
    ordered = sort_rows(kind, list(rows))
    offset = (page - 1) * limit
    if page > 1:
        drift = store().faults.fire("page_drift")
        if drift is not None:
            offset = max(0, offset - drift["shift"])
    chunk = ordered[offset : offset + limit]
    total = len(ordered)
    pages = max(1, -(-total // limit))
    data, included = render_page(chunk)
    body: dict[str, Any] = {"data": data}
    if included is not None:
        body["included"] = included
    body["meta"] = {
        "pagination": {
            "total": total,
            "count": len(chunk),
            "per_page": limit,
            "current_page": page,
            "total_pages": pages,
        }
    }
    body["links"] = {
        "self": page_link(kind, page, limit),
        "first": page_link(kind, 1, limit),
        "prev": page_link(kind, page - 1, limit) if page > 1 else None,
        "next": page_link(kind, page + 1, limit) if page < pages else None,
        "last": page_link(kind, pages, limit),
    }
    return document(body)


def page_args() -> tuple[int, int]:
    """`page` and `limit`, after refusing any parameter a collection does not take."""
    known = {"page", "limit", "sort", "include"}
    for name in request.args:
        if name.startswith("filter[") and name.endswith("]"):
            continue
        if name not in known:
            raise bad_parameter(name, f"unknown query parameter {name!r}")
    page = as_int(request.args.get("page", "1"), "page")
    limit = as_int(request.args.get("limit", str(DEFAULT_LIMIT)), "limit")
    if page < 1:
        raise bad_parameter("page", f"page must be at least 1, got {page}")
    if not 1 <= limit <= MAX_LIMIT:
        raise bad_parameter("limit", f"limit must be between 1 and {MAX_LIMIT}, got {limit}")
    return page, limit


def page_link(kind: str, page: int, limit: int) -> str:
    args = [(k, v) for k, v in request.args.items(multi=True) if k not in ("page", "limit")]
    args += [("page", str(page)), ("limit", str(limit))]
    return f"{base_url()}/{kind}?{urlencode(args)}"


def sort_rows(kind: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    spec = request.args.get("sort", "id")
    for field in reversed(spec.split(",")):
        name = field.lstrip("-")
        if name not in SORTS or (name == "start" and kind not in ("appointments", "absences")):
            raise bad_parameter("sort", f"cannot sort {kind} by {field!r}")
        rows.sort(key=lambda r, n=name: r[n], reverse=field.startswith("-"))
    return rows
