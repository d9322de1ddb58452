"""Verifies Coconut's webhook signature: `X-Coconut-Signature: v2=<hex HMAC-SHA256>`.

The HMAC covers `"{timestamp}.{delivery id}.{raw body}"`, checked over the bytes as received,
before any parsing. The delivery id is what the receiver dedupes on: signed, a captured delivery
cannot be replayed under a new id within the tolerance. A delivery id is letters, digits, `-` and
`_` (Coconut's are UUIDs), never a ".", so where it ends in the signed text is never in doubt.
During a key rotation the header carries several `v2=` values; any one may match. A timestamp
more than the tolerance away from now, in either direction, is a replay.

`v1=` values (over `"{timestamp}.{raw body}"`, the scheme before) are refused with their own
reason: accepting them would keep the replay open, as the delivery id is not in them.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time

TOLERANCE_SECONDS = 300
_UNIX_SECONDS = re.compile(r"[0-9]{1,12}")
_DELIVERY_ID = re.compile(r"[A-Za-z0-9_-]{1,100}")
TOO_OLD = "signature scheme v1 is too old: it does not cover the delivery id; sign with v2="
MISMATCH = "signature does not match the timestamp, delivery id and body"


class SignatureError(Exception):
    """The delivery cannot be shown to come from Coconut; `reason` is safe to send back."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def sign(secret: str, timestamp: int, delivery_id: str, body: bytes) -> str:
    """The header value Coconut sends for this delivery at this timestamp."""
    message = f"{timestamp}.{delivery_id}.".encode() + body
    return "v2=" + hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def verify(
    secret: str,
    timestamp_header: str | None,
    delivery_id_header: str | None,
    signature_header: str | None,
    body: bytes,
    *,
    now: float | None = None,
    tolerance: int = TOLERANCE_SECONDS,
) -> None:
    """Raise SignatureError unless this delivery was signed with `secret` within the tolerance."""
    if not signature_header:
        raise SignatureError("missing X-Coconut-Signature header")
    if not timestamp_header:
        raise SignatureError("missing X-Coconut-Timestamp header")
    if not delivery_id_header:
        raise SignatureError("missing X-Coconut-Delivery-Id header")
    # ASCII digits only: int() also takes "+1", " 1" and other scripts' digits, and a
    # thousand-digit number would overflow the float comparison below.
    if not _UNIX_SECONDS.fullmatch(timestamp_header):
        raise SignatureError(
            f"X-Coconut-Timestamp is not unix seconds, got {timestamp_header[:32]!r}"
        )
    if not _DELIVERY_ID.fullmatch(delivery_id_header):
        raise SignatureError(
            f"X-Coconut-Delivery-Id is not a delivery id, got {delivery_id_header[:32]!r}"
        )
    timestamp = int(timestamp_header)
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        raise SignatureError("X-Coconut-Timestamp is outside the 5-minute tolerance")
    expected = sign(secret, timestamp, delivery_id_header, body).encode()
    # As bytes: compare_digest refuses str with non-ASCII characters (a 500, found by fuzzing).
    offered = [part.strip().encode(errors="replace") for part in signature_header.split(",")]
    if any(hmac.compare_digest(expected, candidate) for candidate in offered):
        return
    schemes = {candidate.partition(b"=")[0] for candidate in offered}
    raise SignatureError(TOO_OLD if b"v1" in schemes and b"v2" not in schemes else MISMATCH)
