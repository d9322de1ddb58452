"""Coconut's webhook signature (webhooks.coconut_signature) against the documented scheme, never
against the receiver's own `sign()`.

core/coconut/openapi.yaml (`webhooks.coconutEvent`): `X-Coconut-Signature: v2=<hex
HMAC-SHA256(secret, "{timestamp}.{delivery id}.{raw body}")>`, `X-Coconut-Timestamp` in unix
seconds, several `v2=` values during a key rotation (any one may match), timestamps more than 5
minutes off are replays, and `v1=` values (the scheme before, over "{timestamp}.{raw body}",
which let a delivery be replayed under another delivery id) are refused as too old.

The known answers were computed outside Python, with OpenSSL:

    printf '%s' '1767225600.0b9c6a1e-delivery.' \
        '{"id":"0b9c6a1e-delivery","type":"appointment.rescheduled"}' \
        | openssl dgst -sha256 -hmac 'whsec_coconut_test_0123456789abcdef'
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from webhooks.coconut_signature import SignatureError, sign, verify

SECRET = "whsec_coconut_test_0123456789abcdef"
ROTATED = "whsec_rotated_key_0123456789abcdef"
T = 1_767_225_600  # 2026-01-01T00:00:00Z
ID = "0b9c6a1e-delivery"
OTHER_ID = "0b9c6a1e-replayed"
BODY = b'{"id":"0b9c6a1e-delivery","type":"appointment.rescheduled"}'
ZOE = '{"data":{"attributes":{"title":"Zoë"}}}'.encode()  # UTF-8 bytes, signed as received

# (secret, timestamp, delivery id, body, hex digest from OpenSSL)
VECTORS = [
    (SECRET, T, ID, BODY, "e0c490cfab1c8cb18e6129a92d6ca6eeef78942ad8d77961b9340f2e570899cc"),
    (SECRET, T + 1, ID, BODY, "1c3efabcfa5ca08637e537f2eac508ca03f357e31c866e4fcfb56afdf0a1f00c"),
    (ROTATED, T, ID, BODY, "1907eaefc1ef3b019e641334675acd8ec9ffadcac9abe6ba7ff9f8a269d047a1"),
    (SECRET, T, ID, ZOE, "ac2fe01269c147d28fd7f5c47e766802c8c1419bb56f3bc78835f597a579b5c5"),
    (SECRET, T, ID, b"", "ee992de8998b67595d889ff9a3e35e5c5d35c6730ed6d8c931bf2ed65fe4ab3b"),
    (SECRET, T, OTHER_ID, BODY, "7a652e053bbe68a7e63ac63cde7fcad0cda34f9b14fb70b04344ccc8cf572df7"),
]
GOOD = "v2=" + VECTORS[0][4]  # SECRET, T, ID, BODY
NEXT_SECOND = "v2=" + VECTORS[1][4]  # the same delivery signed one second later
OTHER_KEY = "v2=" + VECTORS[2][4]  # the same delivery and second, signed with another key
NO_BODY = "v2=" + VECTORS[4][4]  # HMAC over "{T}.{ID}." alone: a signature ignoring the body
OTHER_DELIVERY = "v2=" + VECTORS[5][4]  # the same body and second, under another delivery id
# The scheme before, over "{T}.{BODY}" with SECRET (OpenSSL, as above without the delivery id).
OLD_V1 = "v1=3328345d284e032c6563c8d3172cf0ff27b9f311995c621702681d6a115167a1"

MISMATCH = "signature does not match the timestamp, delivery id and body"
TOO_OLD = "signature scheme v1 is too old: it does not cover the delivery id; sign with v2="
STALE = "X-Coconut-Timestamp is outside the 5-minute tolerance"


def documented(secret: str, timestamp: int, delivery_id: str, body: bytes) -> str:
    """The header value by the documented scheme, computed here with hmac/hashlib."""
    message = str(timestamp).encode("ascii") + b"." + delivery_id.encode("ascii") + b"." + body
    return "v2=" + hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def refused(
    timestamp: str | None,
    signature: str | None,
    body: bytes = BODY,
    delivery_id: str | None = ID,
    **options: object,
) -> str:
    """The reason verify() gives for refusing this delivery (it must refuse it)."""
    with pytest.raises(SignatureError) as caught:
        verify(SECRET, timestamp, delivery_id, signature, body, **options)  # type: ignore[arg-type]
    assert str(caught.value) == caught.value.reason
    return caught.value.reason


@pytest.mark.parametrize(("secret", "timestamp", "delivery_id", "body", "expected"), VECTORS)
def test_the_known_answers_are_accepted_and_signed_alike(
    secret: str, timestamp: int, delivery_id: str, body: bytes, expected: str
) -> None:
    assert documented(secret, timestamp, delivery_id, body) == f"v2={expected}", "the vector"
    verify(secret, str(timestamp), delivery_id, f"v2={expected}", body, now=timestamp)
    assert sign(secret, timestamp, delivery_id, body) == f"v2={expected}"


def test_the_old_v1_known_answer_is_the_old_scheme() -> None:
    old = "v1=" + hmac.new(SECRET.encode(), f"{T}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert old == OLD_V1


def test_the_signature_covers_the_body_byte_for_byte() -> None:
    verify(SECRET, str(T), ID, GOOD, BODY, now=T)
    assert refused(str(T), GOOD, BODY.replace(b"rescheduled", b"rescheduleD"), now=T) == MISMATCH
    assert refused(str(T), GOOD, BODY + b"\n", now=T) == MISMATCH
    assert refused(str(T), GOOD, b"", now=T) == MISMATCH
    # A signature over the timestamp and id alone, or over the body alone, is not Coconut's.
    assert refused(str(T), NO_BODY, BODY, now=T) == MISMATCH
    body_only = "v2=" + hmac.new(SECRET.encode(), BODY, hashlib.sha256).hexdigest()
    assert refused(str(T), body_only, BODY, now=T) == MISMATCH


def test_the_signature_covers_the_delivery_id() -> None:
    # Replayed under another delivery id, within the tolerance: the one the receiver dedupes on.
    assert refused(str(T), GOOD, delivery_id=OTHER_ID, now=T) == MISMATCH
    assert refused(str(T), OTHER_DELIVERY, now=T) == MISMATCH
    verify(SECRET, str(T), OTHER_ID, OTHER_DELIVERY, BODY, now=T)
    # The old scheme's digest, relabelled v2, leaves the id out: it is not Coconut's.
    assert refused(str(T), OLD_V1.replace("v1=", "v2="), now=T) == MISMATCH


def test_the_signature_covers_the_timestamp_and_the_secret() -> None:
    # The header says T+1 (well within the tolerance) but the signature was made at T.
    assert refused(str(T + 1), GOOD, now=T) == MISMATCH
    assert refused(str(T), NEXT_SECOND, now=T) == MISMATCH
    verify(SECRET, str(T + 1), ID, NEXT_SECOND, BODY, now=T)
    assert refused(str(T), OTHER_KEY, now=T) == MISMATCH
    verify(ROTATED, str(T), ID, OTHER_KEY, BODY, now=T)


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
def test_during_a_key_rotation_any_one_v2_value_may_match(header: str) -> None:
    verify(SECRET, str(T), ID, header, BODY, now=T)


@pytest.mark.parametrize(
    "header",
    [
        f"{OTHER_KEY},{NEXT_SECOND}",
        f"{OTHER_KEY},{NO_BODY}",
        f"{OLD_V1},{OTHER_DELIVERY}",  # a v1 value beside a v2 one: the v2 one must match
        GOOD.replace("v2=", "v0="),
        GOOD.replace("v2=", "v3="),
        GOOD.removeprefix("v2="),
        f"t={T},{GOOD.replace('v2=', 'v3=')}",
        f"{GOOD};{OTHER_KEY}",  # not a comma: one value, and not ours
        GOOD + "0",
        GOOD[:-1],
    ],
)
def test_no_value_matching_is_refused(header: str) -> None:
    assert refused(str(T), header, now=T) == MISMATCH


@pytest.mark.parametrize(
    "header",
    [
        OLD_V1,  # right by the old scheme
        f"{OLD_V1}, {OLD_V1}",
        GOOD.replace("v2=", "v1="),  # right by the new scheme, labelled v1
        "v1=" + "0" * 64,
        "v1=é",
    ],
)
def test_only_v1_values_are_refused_as_too_old(header: str) -> None:
    assert refused(str(T), header, now=T) == TOO_OLD


def test_a_v1_value_beside_a_matching_v2_one_is_accepted() -> None:
    """What a sender changing scheme sends: the v2 value decides."""
    verify(SECRET, str(T), ID, f"{OLD_V1},{GOOD}", BODY, now=T)


def test_the_tolerance_is_five_minutes_either_way_inclusive() -> None:
    for now in (T - 300, T - 299.5, T + 300, T + 299.999):
        verify(SECRET, str(T), ID, GOOD, BODY, now=now)
    for now in (T - 301, T - 300.5, T + 300.001, T + 301, T + 3_599, T - 3_599, T + 86_400):
        assert refused(str(T), GOOD, now=now) == STALE, now


def test_a_stale_timestamp_is_refused_even_when_the_signature_is_right() -> None:
    late = T + 10_000
    header = documented(SECRET, late, ID, BODY)
    verify(SECRET, str(late), ID, header, BODY, now=late)
    assert refused(str(late), header, now=T) == STALE


def test_an_explicit_tolerance_replaces_the_default() -> None:
    verify(SECRET, str(T), ID, GOOD, BODY, now=T + 10, tolerance=10)
    assert refused(str(T), GOOD, now=T + 11, tolerance=10) == STALE
    assert refused(str(T), GOOD, now=T - 11, tolerance=10) == STALE
    verify(SECRET, str(T), ID, GOOD, BODY, now=T + 3_600, tolerance=3_600)


def test_without_now_the_clock_decides() -> None:
    current = int(time.time())
    verify(SECRET, str(current), ID, documented(SECRET, current, ID, BODY), BODY)
    old = current - 3_600
    assert refused(str(old), documented(SECRET, old, ID, BODY)) == STALE
    assert refused(str(T), GOOD) == STALE, "2026-01-01 is long past"


@pytest.mark.parametrize("missing", [None, ""])
def test_missing_headers_are_named(missing: str | None) -> None:
    assert refused(str(T), missing, now=T) == "missing X-Coconut-Signature header"
    assert refused(missing, GOOD, now=T) == "missing X-Coconut-Timestamp header"
    assert refused(str(T), GOOD, delivery_id=missing, now=T) == (
        "missing X-Coconut-Delivery-Id header"
    )


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
    verify(SECRET, str(far), ID, documented(SECRET, far, ID, BODY), BODY, now=far)
    assert refused(str(far), documented(SECRET, far, ID, BODY), now=T) == STALE


@pytest.mark.parametrize(
    "delivery_id",
    [
        f"{ID}.",  # a "." would make "{id}.{body}" ambiguous: where does the id end?
        "a.b", "d" * 101, "d 1", " d-1", "d-1 ", "d/1", "d:1", "délivery", "d\udc80",
        "\u0661\u0667",  # Arabic-Indic digits
    ],
)  # fmt: skip
def test_a_delivery_id_must_be_letters_digits_dash_and_underscore(delivery_id: str) -> None:
    signed = documented(SECRET, T, "x", BODY)  # any signature: the id is refused first
    assert refused(str(T), signed, delivery_id=delivery_id, now=T) == (
        f"X-Coconut-Delivery-Id is not a delivery id, got {delivery_id[:32]!r}"
    )


@pytest.mark.parametrize(
    "delivery_id", ["d", "d" * 100, "2f0f3c4e-8f7a-4b53-9a53-5e0b8d3c2a11", "A_z-09"]
)
def test_a_delivery_id_up_to_100_such_characters_is_signed_as_given(delivery_id: str) -> None:
    verify(SECRET, str(T), delivery_id, documented(SECRET, T, delivery_id, BODY), BODY, now=T)


@pytest.mark.parametrize(
    "header",
    ["v2=é", "v2=\udc80", f"{GOOD[:-1]}\u00e9", f"v2=\udcff,{OTHER_KEY}", "v2=日本"],
)
def test_a_non_ascii_signature_is_refused_not_an_error(header: str) -> None:
    assert refused(str(T), header, now=T) == MISMATCH


def test_a_non_ascii_signature_beside_a_good_one_still_matches() -> None:
    verify(SECRET, str(T), ID, f"v2=\udc80,{GOOD}", BODY, now=T)


def test_the_error_carries_its_reason() -> None:
    error = SignatureError("missing X-Coconut-Signature header")
    assert error.reason == "missing X-Coconut-Signature header"
    assert error.args == ("missing X-Coconut-Signature header",)


delivery_ids = st.text(st.sampled_from("abcdefXYZ0123456789-_"), min_size=1, max_size=100)


@given(
    secret=st.text(st.characters(codec="utf-8"), min_size=1, max_size=40),
    timestamp=st.integers(min_value=0, max_value=999_999_999_999),
    delivery_id=delivery_ids,
    body=st.binary(max_size=200),
    skew=st.integers(min_value=-300, max_value=300),
    other_id=delivery_ids,
    other=st.binary(max_size=200),
)
def test_any_delivery_signed_by_the_scheme_verifies_and_no_other_does(
    secret: str,
    timestamp: int,
    delivery_id: str,
    body: bytes,
    skew: int,
    other_id: str,
    other: bytes,
) -> None:
    header = documented(secret, timestamp, delivery_id, body)
    verify(secret, str(timestamp), delivery_id, header, body, now=timestamp + skew)
    mismatch = f"^{re.escape(MISMATCH)}$"
    if other_id != delivery_id:
        with pytest.raises(SignatureError, match=mismatch):
            verify(secret, str(timestamp), other_id, header, body, now=timestamp + skew)
    if other != body:
        with pytest.raises(SignatureError, match=mismatch):
            verify(secret, str(timestamp), delivery_id, header, other, now=timestamp + skew)
