"""Opaque identifiers shaped like Outlook's: long url-safe base64 strings.

An occurrence id is derived from its series master's id and the occurrence's original date, so
a client can GET, PATCH or DELETE an occurrence by the id it saw in a calendarView, as in Graph.
"""

from __future__ import annotations

import base64
import binascii
import secrets
from datetime import date

_PREFIX = "AAMkAG"
_RAW = 48


def _encode(raw: bytes) -> str:
    return _PREFIX + base64.urlsafe_b64encode(raw).decode()


def new_event_id() -> str:
    """A fresh event id (single instance or series master)."""
    return _encode(b"E" + secrets.token_bytes(_RAW))


def occurrence_id(master_id: str, day: date) -> str:
    """The stable id of the occurrence of master_id originally on `day`."""
    raw = base64.urlsafe_b64decode(master_id[len(_PREFIX) :])
    return _encode(b"O" + raw[1:] + day.strftime("%Y%m%d").encode())


def parse_occurrence_id(event_id: str) -> tuple[str, date] | None:
    """(master id, original date) if event_id names an occurrence, else None."""
    if not event_id.startswith(_PREFIX):
        return None
    try:
        raw = base64.urlsafe_b64decode(event_id[len(_PREFIX) :])
    except (binascii.Error, ValueError):
        return None
    if len(raw) != 1 + _RAW + 8 or raw[:1] != b"O":
        return None
    try:
        day = date(int(raw[-8:-4]), int(raw[-4:-2]), int(raw[-2:]))
    except ValueError:
        return None
    return _encode(b"E" + raw[1:-8]), day


def change_key() -> str:
    """A new changeKey (Outlook's are base64 of a few dozen bytes)."""
    return "DwAAABYAAA" + base64.b64encode(secrets.token_bytes(21)).decode()


def ical_uid() -> str:
    """An iCalUId in Outlook's 040000008200E00074C5B7101A82E008 form."""
    return "040000008200E00074C5B7101A82E00800000000" + secrets.token_hex(28).upper()


def opaque_token(nbytes: int = 24) -> str:
    """An opaque url-safe token (access tokens, codes, delta/skip tokens)."""
    return secrets.token_urlsafe(nbytes)
