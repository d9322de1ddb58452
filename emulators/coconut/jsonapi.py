"""JSON:API pieces shared by the store and the routes: errors, time formats, resource objects.

Coconut's conventions (research/coconut.md §7.2): numeric ids sent as strings in resource
objects and as integers in `*_id` attributes; `start`/`end` as ISO-8601 with the offset of the
resource's IANA `timezone`; `created_at`/`updated_at` in UTC with `Z`. Requests may give a time
as ISO-8601 with an offset, or as `YYYY-MM-DD HH:MM:SS` wall-clock time plus `timezone`.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

WALL_CLOCK = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$")
ISO_WITH_OFFSET = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})$")


class ApiError(Exception):
    """An answer with a JSON:API `errors[]` body; raised anywhere, rendered in one place."""

    def __init__(
        self,
        status: int,
        code: str,
        title: str,
        detail: str,
        *,
        pointer: str | None = None,
        parameter: str | None = None,
        meta: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.title = title
        self.detail = detail
        self.pointer = pointer
        self.parameter = parameter
        self.meta = meta
        self.headers = headers or {}

    def document(self) -> dict[str, Any]:
        error: dict[str, Any] = {
            "status": str(self.status),
            "code": self.code,
            "title": self.title,
            "detail": self.detail,
        }
        if self.pointer is not None:
            error["source"] = {"pointer": self.pointer}
        elif self.parameter is not None:
            error["source"] = {"parameter": self.parameter}
        if self.meta:
            error["meta"] = self.meta
        return {"errors": [error]}


def invalid(detail: str, pointer: str, code: str = "validation_failed") -> ApiError:
    """A 422 for one attribute, the most common error the write endpoints give."""
    return ApiError(422, code, "Invalid attribute", detail, pointer=pointer)


def utcnow() -> datetime:
    return datetime.now(UTC)


def fmt_utc(value: datetime | None) -> str | None:
    """`2026-05-01T14:03:22.123456Z`: microseconds so `updated_since` can tell writes apart."""
    if value is None:
        return None
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def fmt_local(value: datetime, timezone: str) -> str:
    """ISO-8601 with the offset the resource's time zone has at that instant."""
    return value.astimezone(ZoneInfo(timezone)).isoformat(timespec="seconds")


def zone(name: Any, pointer: str) -> str:
    """Return `name` if it is a known IANA time zone, else a 422 at `pointer`."""
    if not isinstance(name, str) or not name or name.startswith(("/", ".")):
        raise invalid(f"timezone must be an IANA time zone name, got {name!r}", pointer)
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise invalid(f"unknown IANA time zone, got {name!r}", pointer) from None
    return name


def parse_time(value: Any, timezone: str, pointer: str) -> datetime:
    """A request time: ISO-8601 with offset, or wall-clock `YYYY-MM-DD HH:MM:SS` in `timezone`."""
    if isinstance(value, str) and ISO_WITH_OFFSET.match(value):
        return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)
    if isinstance(value, str) and WALL_CLOCK.match(value):
        naive = datetime.strptime(value, "%Y-%m-%d %H:%M:%S")  # noqa: DTZ007 - zone added next
        return naive.replace(tzinfo=ZoneInfo(timezone)).astimezone(UTC)
    raise invalid(
        f"expected ISO-8601 with offset or 'YYYY-MM-DD HH:MM:SS', got {value!r}",
        pointer,
        code="invalid_datetime",
    )


def parse_query_time(value: str, parameter: str) -> datetime:
    """A filter time: ISO-8601 with offset only, since a filter has no timezone beside it."""
    if not ISO_WITH_OFFSET.match(value):
        raise ApiError(
            400,
            "invalid_parameter",
            "Invalid query parameter",
            f"expected ISO-8601 with offset, got {value!r}",
            parameter=parameter,
        )
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)


def resource(
    kind: str,
    record_id: int | str,
    attributes: dict[str, Any],
    base_url: str,
    relationships: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A JSON:API resource object with an absolute `links.self`."""
    obj: dict[str, Any] = {"type": kind, "id": str(record_id), "attributes": attributes}
    if relationships:
        obj["relationships"] = relationships
    obj["links"] = {"self": f"{base_url}/{kind}/{record_id}"}
    return obj
