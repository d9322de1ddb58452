"""Verifies Coconut's webhook signature: `X-Coconut-Signature: v1=<hex HMAC-SHA256>`.

The HMAC covers `"{timestamp}.{raw body}"`, so it is checked over the bytes as received, before
any parsing. During a key rotation the header carries several `v1=` values; any one may match.
A timestamp more than the tolerance away from now, in either direction, is a replay.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time

TOLERANCE_SECONDS = 300
_UNIX_SECONDS = re.compile(r"[0-9]{1,12}")


class SignatureError(Exception):
    """The delivery cannot be shown to come from Coconut; `reason` is safe to send back."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The header value Coconut sends for this body at this timestamp."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"v1={digest.hexdigest()}"


def verify(
    secret: str,
    timestamp_header: str | None,
    signature_header: str | None,
    body: bytes,
    *,
    now: float | None = None,
    tolerance: int = TOLERANCE_SECONDS,
) -> None:
    """Raise SignatureError unless the body was signed with `secret` within the tolerance."""
    if not signature_header:
        raise SignatureError("missing X-Coconut-Signature header")
    if not timestamp_header:
        raise SignatureError("missing X-Coconut-Timestamp header")
    # ASCII digits only: int() also takes "+1", " 1" and other scripts' digits, and a
    # thousand-digit number would overflow the float comparison below.
    if not _UNIX_SECONDS.fullmatch(timestamp_header):
        raise SignatureError(
            f"X-Coconut-Timestamp is not unix seconds, got {timestamp_header[:32]!r}"
        )
    timestamp = int(timestamp_header)
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        raise SignatureError("X-Coconut-Timestamp is outside the 5-minute tolerance")
    expected = sign(secret, timestamp, body).encode()
    # As bytes: compare_digest refuses str with non-ASCII characters (a 500, found by fuzzing).
    offered = [part.strip().encode(errors="replace") for part in signature_header.split(",")]
    if not any(hmac.compare_digest(expected, candidate) for candidate in offered):
        raise SignatureError("signature does not match the body")
