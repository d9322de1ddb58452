"""Strict checks of request attributes: each failure is a 422 pointing at the attribute."""

from __future__ import annotations

from typing import Any

from emulators.coconut.jsonapi import invalid


def check_keys(
    attrs: dict[str, Any],
    allowed: set[str],
    *,
    required: tuple[str, ...] = (),
    read_only: set[str] | frozenset[str] = frozenset(),
) -> None:
    """Strict attribute sets: unknown names and read-only names are 422s, not ignored."""
    for name in sorted(attrs):
        pointer = f"/data/attributes/{name}"
        if name in read_only or name in ("id", "version", "created_at", "updated_at"):
            raise invalid(f"{name} is read-only", pointer, code="read_only")
        if name not in allowed:
            raise invalid(f"unknown attribute {name!r}", pointer, code="unknown_attribute")
    for name in required:
        if attrs.get(name) is None:
            raise invalid(f"{name} is required", f"/data/attributes/{name}", code="required")


def want_int(value: Any, pointer: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid(f"expected an integer, got {value!r}", pointer)
    return value


def want_bool(value: Any, pointer: str) -> bool:
    if not isinstance(value, bool):
        raise invalid(f"expected true or false, got {value!r}", pointer)
    return value


def want_str(value: Any, pointer: str, nullable: bool = False) -> Any:
    if value is None and nullable:
        return None
    if not isinstance(value, str):
        raise invalid(f"expected a string, got {value!r}", pointer)
    return value
