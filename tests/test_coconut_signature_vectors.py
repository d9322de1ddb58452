"""Coconut's webhook signature (webhooks.coconut_signature) against the documented scheme, never
against the receiver's own `sign()`.

research/coconut.md §7.6: `X-Coconut-Signature: v1=<hex HMAC-SHA256(secret, "{timestamp}.{raw
body}")>`, `X-Coconut-Timestamp` in unix seconds, several `v1=` values during a key rotation (any
one may match), and timestamps more than 5 minutes off are replays.

The known answers were computed outside Python, with OpenSSL:

    printf '%s' '1767225600.{"id":"0b9c6a1e-delivery","type":"appointment.rescheduled"}' \
        | openssl dgst -sha256 -hmac 'whsec_coconut_test'
"""

from __future__ import annotations

import hashlib
import hmac
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from webhooks.coconut_signature import SignatureError, sign, verify

SECRET = "whsec_coconut_test"
ROTATED = "whsec_rotated_key"
T = 1_767_225_600  # 2026-01-01T00:00:00Z
BODY = b'{"id":"0b9c6a1e-delivery","type":"appointment.rescheduled"}'
ZOE = '{"data":{"attributes":{"title":"Zoë"}}}'.encode()  # UTF-8 bytes, signed as received

# (secret, timestamp, body, hex digest from OpenSSL)
VECTORS = [
    (SECRET, T, BODY, "08d8988e5b7b8208cdf1b7bf5fc6e938c9a8e666011b17a7620d3366c3ae0f31"),
    (SECRET, T + 1, BODY, "19b3013569b489cda36336ab5236aa11beec32f294bf1e610a297a2338af2ca4"),
    (ROTATED, T, BODY, "c965866df5119dfa75d3720b1c8148ea5b90d9f9f9a27bd1069bdf140f28e2e8"),
    (SECRET, T, ZOE, "168166d52b352df466fa1bf8abb52e17bf6abadffc6dff133f78b2877a05269f"),
    (SECRET, T, b"", "d8a98b85bce162e5a45f1efacdae6ee38821a7414383fdfec69fe18720f9091f"),
]
GOOD = "v1=" + VECTORS[0][3]  # SECRET, T, BODY
NEXT_SECOND = "v1=" + VECTORS[1][3]  # the same body signed one second later
OTHER_KEY = "v1=" + VECTORS[2][3]  # the same body and second, signed with another key
NO_BODY = "v1=" + VECTORS[4][3]  # HMAC over "{T}." alone: what a signature ignoring the body is

MISMATCH = "signature does not match the body"
STALE = "X-Coconut-Timestamp is outside the 5-minute tolerance"


def documented(secret: str, timestamp: int, body: bytes) -> str:
    """The header value by the documented scheme, computed here with hmac/hashlib."""
    message = str(timestamp).encode("ascii") + b"." + body
    return "v1=" + hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def refused(
    timestamp: str | None, signature: str | None, body: bytes = BODY, **options: object
) -> str:
    """The reason verify() gives for refusing this delivery (it must refuse it)."""
    with pytest.raises(SignatureError) as caught:
        verify(SECRET, timestamp, signature, body, **options)  # type: ignore[arg-type]
    assert str(caught.value) == caught.value.reason
    return caught.value.reason


@pytest.mark.parametrize(("secret", "timestamp", "body", "expected"), VECTORS)
def test_the_known_answers_are_accepted_and_signed_alike(
    secret: str, timestamp: int, body: bytes, expected: str
) -> None:
    assert documented(secret, timestamp, body) == f"v1={expected}", "the vector itself"
    verify(secret, str(timestamp), f"v1={expected}", body, now=timestamp)
    assert sign(secret, timestamp, body) == f"v1={expected}"


def test_the_signature_covers_the_body_byte_for_byte() -> None:
    verify(SECRET, str(T), GOOD, BODY, now=T)
    assert refused(str(T), GOOD, BODY.replace(b"rescheduled", b"rescheduleD"), now=T) == MISMATCH
    assert refused(str(T), GOOD, BODY + b"\n", now=T) == MISMATCH
    assert refused(str(T), GOOD, b"", now=T) == MISMATCH
    # A signature over the timestamp alone, or over the body alone, is not Coconut's.
    assert refused(str(T), NO_BODY, BODY, now=T) == MISMATCH
    body_only = "v1=" + hmac.new(SECRET.encode(), BODY, hashlib.sha256).hexdigest()
    assert refused(str(T), body_only, BODY, now=T) == MISMATCH


def test_the_signature_covers_the_timestamp_and_the_secret() -> None:
    # The header says T+1 (well within the tolerance) but the signature was made at T.
    assert refused(str(T + 1), GOOD, now=T) == MISMATCH
    assert refused(str(T), NEXT_SECOND, now=T) == MISMATCH
    verify(SECRET, str(T + 1), NEXT_SECOND, BODY, now=T)
    assert refused(str(T), OTHER_KEY, now=T) == MISMATCH
    verify(ROTATED, str(T), OTHER_KEY, BODY, now=T)


@pytest.mark.parametrize(
    "header",
    [
        f"{OTHER_KEY},{GOOD}",
        f"{GOOD},{OTHER_KEY}",
        f"{OTHER_KEY}, {GOOD}",
        f"{NEXT_SECOND},{OTHER_KEY},{GOOD}",
        f" {GOOD} ",
    ],
)
def test_during_a_key_rotation_any_one_v1_value_may_match(header: str) -> None:
    verify(SECRET, str(T), header, BODY, now=T)


@pytest.mark.parametrize(
    "header",
    [
        f"{OTHER_KEY},{NEXT_SECOND}",
        f"{OTHER_KEY},{NO_BODY}",
        GOOD.replace("v1=", "v0="),
        GOOD.removeprefix("v1="),
        f"t={T},{GOOD.replace('v1=', 'v2=')}",
        f"{GOOD};{OTHER_KEY}",  # not a comma: one value, and not ours
        GOOD + "0",
        GOOD[:-1],
    ],
)
def test_no_value_matching_is_refused(header: str) -> None:
    assert refused(str(T), header, now=T) == MISMATCH


def test_the_tolerance_is_five_minutes_either_way_inclusive() -> None:
    for now in (T - 300, T - 299.5, T + 300, T + 299.999):
        verify(SECRET, str(T), GOOD, BODY, now=now)
    for now in (T - 301, T - 300.5, T + 300.001, T + 301, T + 3_599, T - 3_599, T + 86_400):
        assert refused(str(T), GOOD, now=now) == STALE, now


def test_a_stale_timestamp_is_refused_even_when_the_signature_is_right() -> None:
    late = T + 10_000
    header = documented(SECRET, late, BODY)
    verify(SECRET, str(late), header, BODY, now=late)
    assert refused(str(late), header, now=T) == STALE


def test_an_explicit_tolerance_replaces_the_default() -> None:
    verify(SECRET, str(T), GOOD, BODY, now=T + 10, tolerance=10)
    assert refused(str(T), GOOD, now=T + 11, tolerance=10) == STALE
    assert refused(str(T), GOOD, now=T - 11, tolerance=10) == STALE
    verify(SECRET, str(T), GOOD, BODY, now=T + 3_600, tolerance=3_600)


def test_without_now_the_clock_decides() -> None:
    current = int(time.time())
    verify(SECRET, str(current), documented(SECRET, current, BODY), BODY)
    old = current - 3_600
    assert refused(str(old), documented(SECRET, old, BODY)) == STALE
    assert refused(str(T), GOOD) == STALE, "2026-01-01 is long past"


@pytest.mark.parametrize("missing", [None, ""])
def test_missing_headers_are_named(missing: str | None) -> None:
    assert refused(str(T), missing, now=T) == "missing X-Coconut-Signature header"
    assert refused(missing, GOOD, now=T) == "missing X-Coconut-Timestamp header"


@pytest.mark.parametrize(
    "header",
    [
        f"+{T}", f" {T}", f"{T} ", f"{T}.0", f"-{T}", "1e9", "0x69558000", "",
        "١٧٦٧٢٢٥٦٠٠",  # Arabic-Indic digits: int() takes them, the header may not
        "1" * 13,  # more than 12 digits
        "now",
    ],
)  # fmt: skip
def test_a_timestamp_must_be_plain_ascii_unix_seconds(header: str) -> None:
    if not header:
        assert refused(header, GOOD, now=T) == "missing X-Coconut-Timestamp header"
        return
    assert refused(header, GOOD, now=T) == (
        f"X-Coconut-Timestamp is not unix seconds, got {header!r}"
    )


def test_a_long_bad_timestamp_is_quoted_to_32_characters() -> None:
    header = "0123456789abcdef" * 4  # 64 characters
    reason = refused(header, GOOD, now=T)
    assert reason == f"X-Coconut-Timestamp is not unix seconds, got {header[:32]!r}"
    assert header[:33] not in reason


def test_twelve_digits_are_still_unix_seconds() -> None:
    far = 999_999_999_999  # the largest the header may carry
    verify(SECRET, str(far), documented(SECRET, far, BODY), BODY, now=far)
    assert refused(str(far), documented(SECRET, far, BODY), now=T) == STALE


@pytest.mark.parametrize(
    "header",
    ["v1=é", "v1=\udc80", f"{GOOD[:-1]}\u00e9", f"v1=\udcff,{OTHER_KEY}", "v1=日本"],
)
def test_a_non_ascii_signature_is_refused_not_an_error(header: str) -> None:
    assert refused(str(T), header, now=T) == MISMATCH


def test_a_non_ascii_signature_beside_a_good_one_still_matches() -> None:
    verify(SECRET, str(T), f"v1=\udc80,{GOOD}", BODY, now=T)


def test_the_error_carries_its_reason() -> None:
    error = SignatureError("missing X-Coconut-Signature header")
    assert error.reason == "missing X-Coconut-Signature header"
    assert error.args == ("missing X-Coconut-Signature header",)


@given(
    secret=st.text(st.characters(codec="utf-8"), min_size=1, max_size=40),
    timestamp=st.integers(min_value=0, max_value=999_999_999_999),
    body=st.binary(max_size=200),
    skew=st.integers(min_value=-300, max_value=300),
    other=st.binary(max_size=200),
)
def test_any_body_signed_by_the_scheme_verifies_and_no_other_body_does(
    secret: str, timestamp: int, body: bytes, skew: int, other: bytes
) -> None:
    header = documented(secret, timestamp, body)
    verify(secret, str(timestamp), header, body, now=timestamp + skew)
    if other != body:
        with pytest.raises(SignatureError, match=r"^signature does not match the body$"):
            verify(secret, str(timestamp), header, other, now=timestamp + skew)
