"""Graph's error envelope, raised anywhere in a handler and rendered in one place.

Graph answers every failure with `{"error":{"code","message","innerError":{...}}}`; clients
branch on the status and the code, so both are part of the emulator's contract.
"""

from __future__ import annotations

import uuid
from typing import Any

from emulators.graph.timeutil import format_utc, utcnow


class GraphError(Exception):
    """A Graph failure: HTTP status, Graph error code, message and optional extra headers."""

    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def error_body(code: str, message: str, client_request_id: str | None = None) -> dict[str, Any]:
    """The JSON body Graph sends with an error, innerError included."""
    request_id = str(uuid.uuid4())
    return {
        "error": {
            "code": code,
            "message": message,
            "innerError": {
                "date": format_utc(utcnow(), fraction=False),
                "request-id": request_id,
                "client-request-id": client_request_id or request_id,
            },
        }
    }


def not_found(what: str = "The specified object was not found in the store.") -> GraphError:
    """Outlook's answer for an unknown or deleted item."""
    return GraphError(404, "ErrorItemNotFound", what)


def access_denied() -> GraphError:
    """Outlook's answer when the caller may not reach a mailbox."""
    return GraphError(
        403, "ErrorAccessDenied", "Access is denied. Check credentials and try again."
    )


def bad_request(message: str, code: str = "BadRequest") -> GraphError:
    """A malformed request (unknown property, bad value, unsupported query)."""
    return GraphError(400, code, message)
