"""Reading a Graph request: case-insensitive query options, Prefer headers and paging links.

Graph treats `$top` and `$TOP`, `startDateTime` and `startdatetime` alike; it refuses query
options it does not know with a 400, and so does the emulator.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from flask import request

from emulators.graph.errors import bad_request
from emulators.graph.odata import parse_prefer
from emulators.graph.timeutil import BadTime, parse_instant, zone

ODATA_OPTIONS = {"$top", "$skip", "$select", "$filter", "$expand", "$orderby", "$count"}


def args(allowed: set[str]) -> dict[str, str]:
    """Query parameters keyed in lower case; anything not in `allowed` is a 400."""
    out: dict[str, str] = {}
    for key, value in request.args.items(multi=False):
        name = key.lower()
        if name not in allowed:
            if name.startswith("$"):
                raise bad_request(f"Query option '{key}' is not allowed.", "BadRequest")
            raise bad_request(
                f"Unrecognized query argument specified: '{key}'.", "ErrorInvalidParameter"
            )
        out[name] = value
    return out


def prefer() -> dict[str, str]:
    return parse_prefer(request.headers.getlist("Prefer"))


def time_zone() -> str:
    """The zone answers use: `Prefer: outlook.timezone`, else UTC."""
    name = prefer().get("outlook.timezone", "UTC") or "UTC"
    try:
        zone(name)
    except BadTime as exc:
        raise bad_request(str(exc), "TimeZoneNotSupportedException") from exc
    return name


def body_type() -> str | None:
    return prefer().get("outlook.body-content-type")


def integer(query: dict[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise bad_request(f"Invalid value '{raw}' for query option '{name}'.") from None
    if not low <= value <= high:
        raise bad_request(f"Invalid value '{raw}' for query option '{name}'; {low}-{high}.")
    return value


def window(query: dict[str, str]) -> tuple[Any, Any]:
    """The calendarView window; both ends required, offsets honoured, else UTC."""
    if "startdatetime" not in query or "enddatetime" not in query:
        raise bad_request(
            "This request requires a time window specified by the query string parameters "
            "StartDateTime and EndDateTime.",
            "ErrorInvalidParameter",
        )
    try:
        start = parse_instant(query["startdatetime"])
        end = parse_instant(query["enddatetime"])
    except BadTime as exc:
        raise bad_request(str(exc), "ErrorInvalidParameter") from exc
    if end <= start:
        raise bad_request("The end of the time window must be after its start.",
                          "ErrorInvalidParameter")  # fmt: skip
    return start, end


def base_url() -> str:
    return request.host_url.rstrip("/")


def link(path: str, params: dict[str, Any]) -> str:
    """An absolute link back to the emulator (the SDK follows links verbatim)."""
    return f"{base_url()}{path}?{urlencode(params)}"


def page(
    rows: list[dict[str, Any]], query: dict[str, str], default_top: int, max_top: int
) -> dict[str, Any]:
    """One page of rows with `@odata.nextLink` carrying $skip, as Graph pages Outlook lists."""
    top = integer(query, "$top", default_top, 1, max_top)
    skip = integer(query, "$skip", 0, 0, 10**9)
    out: dict[str, Any] = {"value": rows[skip : skip + top]}
    if skip + top < len(rows):
        params = {k: v for k, v in request.args.items() if k.lower() not in ("$skip", "$top")}
        params["$top"] = str(top)
        params["$skip"] = str(skip + top)
        out["@odata.nextLink"] = link(request.path, params)
    return out
