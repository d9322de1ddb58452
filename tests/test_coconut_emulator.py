"""The Coconut emulator is as strict as the real thing: auth, scopes, validation, paging limits.

These go through the Flask app in-process (the same app the CLI serves); the end-to-end
behaviour over real HTTP is in test_coconut_client.py and test_coconut_webhooks.py.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from typing import Any

import pytest
from flask.testing import FlaskClient

from emulators.coconut.app import API, create_app
from emulators.coconut.deliveries import signature
from emulators.coconut.seed import seed
from emulators.coconut.store import Settings, Store

CLIENT_ID, CLIENT_SECRET = "strict-client", "strict-secret"


@pytest.fixture
def store() -> Store:
    store = Store(CLIENT_ID, CLIENT_SECRET, "bank.coconutcalendar.com", Settings())
    seed(store, 3, "contoso.example")
    return store


@pytest.fixture
def http(store: Store) -> Iterator[FlaskClient]:
    with create_app(store).test_client() as client:
        yield client


def token(http: FlaskClient, scope: str | None = None) -> str:
    form = {"grant_type": "client_credentials", "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET}  # fmt: skip
    if scope:
        form["scope"] = scope
    answer = http.post(f"{API}/oauth/token", data=form)
    assert answer.status_code == 200, answer.text
    return answer.json["access_token"]


def auth(http: FlaskClient, scope: str | None = None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(http, scope)}"}


def error(answer: Any) -> dict[str, Any]:
    (first,) = answer.json["errors"]
    assert first["status"] == str(answer.status_code)
    return first


def absence(**attrs: Any) -> dict[str, Any]:
    base = {"user_id": 1, "start": "2030-01-07 09:00:00", "end": "2030-01-07 10:00:00",
            "external_id": "evt-1"}  # fmt: skip
    return {"data": {"type": "absences", "attributes": {**base, **attrs}}}


def test_token_endpoint_refuses_bad_clients_with_oauth_errors(http: FlaskClient) -> None:
    wrong = http.post(
        f"{API}/oauth/token",
        data={"grant_type": "client_credentials", "client_id": CLIENT_ID, "client_secret": "x"},
    )
    assert wrong.status_code == 401 and wrong.json["error"] == "invalid_client"
    grant = http.post(f"{API}/oauth/token", data={"grant_type": "password"})
    assert grant.status_code == 400 and grant.json["error"] == "unsupported_grant_type"
    scope = http.post(
        f"{API}/oauth/token",
        data={"grant_type": "client_credentials", "client_id": CLIENT_ID,
              "client_secret": CLIENT_SECRET, "scope": "everything"},
    )  # fmt: skip
    assert scope.status_code == 400 and scope.json["error"] == "invalid_scope"


def test_token_endpoint_accepts_http_basic_client_authentication(http: FlaskClient) -> None:
    basic = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
    answer = http.post(
        f"{API}/oauth/token",
        data={"grant_type": "client_credentials"},
        headers={"Authorization": f"Basic {basic}"},
    )
    assert answer.status_code == 200 and answer.json["token_type"] == "Bearer"


def test_missing_unknown_and_expired_tokens_get_401(http: FlaskClient, store: Store) -> None:
    assert error(http.get(f"{API}/users"))["detail"] == "missing bearer token"
    unknown = http.get(f"{API}/users", headers={"Authorization": "Bearer nope"})
    assert unknown.status_code == 401 and unknown.headers["WWW-Authenticate"].startswith("Bearer")
    headers = auth(http)
    assert http.get(f"{API}/users", headers=headers).status_code == 200
    assert http.post("/_emulator/tokens/expire").json == {"expired": 1}
    expired = http.get(f"{API}/users", headers=headers)
    assert expired.status_code == 401 and "expired" in error(expired)["detail"]


def test_a_token_without_the_scope_gets_403(http: FlaskClient) -> None:
    reader = auth(http, "users:read absences:read")
    assert http.get(f"{API}/absences", headers=reader).status_code == 200
    denied = http.post(f"{API}/absences", json=absence(), headers=reader)
    assert denied.status_code == 403
    assert error(denied)["detail"] == "this call needs scope absences:write"
    assert http.get(f"{API}/webhooks", headers=reader).status_code == 403


def test_absence_validation(http: FlaskClient) -> None:
    headers = auth(http)
    backwards = http.post(
        f"{API}/absences", json=absence(end="2030-01-07 08:00:00"), headers=headers
    )
    assert backwards.status_code == 422
    assert error(backwards)["source"] == {"pointer": "/data/attributes/start"}
    admin = http.post(f"{API}/absences", json=absence(user_id=5), headers=headers)
    assert admin.status_code == 422 and error(admin)["code"] == "user_not_bookable"
    unknown = http.post(f"{API}/absences", json=absence(colour="red"), headers=headers)
    assert unknown.status_code == 422 and error(unknown)["code"] == "unknown_attribute"
    zone = http.post(f"{API}/absences", json=absence(timezone="Mars/Olympus"), headers=headers)
    assert zone.status_code == 422 and "Mars/Olympus" in error(zone)["detail"]
    naive = http.post(f"{API}/absences", json=absence(start="07/01/2030 9am"), headers=headers)
    assert naive.status_code == 422 and error(naive)["code"] == "invalid_datetime"
    no_id = http.post(f"{API}/absences", json=absence(external_id=None), headers=headers)
    assert no_id.status_code == 422


def test_an_inactive_user_takes_no_new_blocks(http: FlaskClient) -> None:
    headers = auth(http)
    off = {"data": {"type": "users", "attributes": {"active": False}}}
    assert http.patch(f"{API}/users/1", json=off, headers=headers).status_code == 200
    refused = http.post(f"{API}/absences", json=absence(), headers=headers)
    assert refused.status_code == 422 and error(refused)["code"] == "user_not_bookable"


def test_a_user_without_assignments_no_longer_takes_appointments(http: FlaskClient) -> None:
    headers = auth(http)
    strip = {"data": {"type": "users", "relationships": {"assignments": {"data": []}}}}
    answer = http.patch(f"{API}/users/2", json=strip, headers=headers)
    assert answer.status_code == 200
    assert answer.json["data"]["attributes"]["takes_appointments"] is False
    assert answer.json["data"]["attributes"]["version"] == 2


def test_duplicate_external_id_answers_409_with_the_existing_id(http: FlaskClient) -> None:
    headers = auth(http)
    first = http.post(f"{API}/absences", json=absence(), headers=headers)
    assert first.status_code == 201
    assert first.headers["Location"].endswith(f"/absences/{first.json['data']['id']}")
    again = http.post(f"{API}/absences", json=absence(title="retry"), headers=headers)
    assert again.status_code == 409
    assert error(again)["meta"] == {"existing_id": first.json["data"]["id"]}


def test_if_match_must_be_current_and_well_formed(http: FlaskClient) -> None:
    headers = auth(http)
    made = http.post(f"{API}/absences", json=absence(), headers=headers).json["data"]
    url = f"{API}/absences/{made['id']}"
    change = {"data": {"type": "absences", "attributes": {"title": "Away"}}}
    stale = http.patch(url, json=change, headers={**headers, "If-Match": "7"})
    assert stale.status_code == 409 and error(stale)["meta"] == {"current_version": 1}
    garbled = http.patch(url, json=change, headers={**headers, "If-Match": "W/abc"})
    assert garbled.status_code == 400
    quoted = http.patch(url, json=change, headers={**headers, "If-Match": '"1"'})
    assert quoted.status_code == 200 and quoted.json["data"]["attributes"]["version"] == 2
    read_only = {"data": {"type": "absences", "attributes": {"external_id": "other"}}}
    moved = http.patch(url, json=read_only, headers=headers)
    assert moved.status_code == 422 and error(moved)["code"] == "read_only"


def test_documents_must_be_json_api_of_the_right_type(http: FlaskClient) -> None:
    headers = auth(http)
    form = http.post(f"{API}/absences", data="user_id=1", headers=headers,
                     content_type="application/x-www-form-urlencoded")  # fmt: skip
    assert form.status_code == 415
    broken = http.post(f"{API}/absences", data="{", headers=headers,
                       content_type="application/json")  # fmt: skip
    assert broken.status_code == 400 and error(broken)["code"] == "invalid_json"
    wrong_type = {"data": {"type": "appointments", "attributes": {}}}
    typed = http.post(f"{API}/absences", json=wrong_type, headers=headers)
    assert typed.status_code == 400 and error(typed)["source"] == {"pointer": "/data/type"}


def test_collections_cap_limit_and_refuse_unknown_parameters(http: FlaskClient) -> None:
    headers = auth(http)
    assert http.get(f"{API}/users?limit=100", headers=headers).status_code == 200
    big = http.get(f"{API}/users?limit=101", headers=headers)
    assert big.status_code == 400 and error(big)["source"] == {"parameter": "limit"}
    assert http.get(f"{API}/users?filter[colour]=red", headers=headers).status_code == 400
    assert http.get(f"{API}/users?per_page=5", headers=headers).status_code == 400
    assert http.get(f"{API}/appointments?include=rooms", headers=headers).status_code == 400
    when = http.get(f"{API}/appointments?filter[updated_since]=yesterday", headers=headers)
    assert when.status_code == 400


def test_links_next_walks_the_whole_collection(http: FlaskClient, store: Store) -> None:
    headers = auth(http)
    seen, url = [], f"{API}/appointments?limit=4&filter[status]=scheduled"
    while url:
        page = http.get(url, headers=headers)
        assert page.status_code == 200
        seen += [item["id"] for item in page.json["data"]]
        url = page.json["links"]["next"]
        assert page.json["meta"]["pagination"]["per_page"] == 4
    expected = [str(a["id"]) for a in store.appointments.values() if a["status"] == "scheduled"]
    assert seen == expected and len(seen) > 4


def test_rate_limit_gives_429_with_retry_after(http: FlaskClient, store: Store) -> None:
    headers = auth(http)
    store.settings.rate_limit = 2
    answers = [http.get(f"{API}/users/1", headers=headers) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 429]
    assert answers[1].headers["X-RateLimit-Remaining"] == "0"
    assert 1 <= int(answers[2].headers["Retry-After"]) <= 60


def test_injected_api_errors_and_unknown_routes_are_json_api(http: FlaskClient) -> None:
    headers = auth(http)
    armed = http.post("/_emulator/faults/api_error", json={"count": 1, "status": 503})
    assert armed.status_code == 201
    down = http.get(f"{API}/users/1", headers=headers)
    assert down.status_code == 503 and down.headers["Retry-After"] == "1"
    assert http.get(f"{API}/users/1", headers=headers).status_code == 200
    missing = http.get(f"{API}/rooms", headers=headers)
    assert missing.status_code == 404 and error(missing)["code"] == "not_found"
    wrong_method = http.put(f"{API}/users/1", headers=headers)
    assert wrong_method.status_code == 405


def test_cancelling_every_attendee_cancels_the_appointment(http: FlaskClient) -> None:
    headers = auth(http)
    group = http.get(f"{API}/appointments/1", headers=headers).json["data"]
    first, second = (a["id"] for a in group["relationships"]["attendees"]["data"])
    one = http.delete(f"{API}/appointments/1/attendees/{first}?include=attendees", headers=headers)
    assert one.json["data"]["attributes"]["status"] == "scheduled"
    two = http.delete(f"{API}/appointments/1/attendees/{second}", headers=headers)
    assert two.json["data"]["attributes"]["status"] == "cancelled"
    late = {"data": {"type": "appointments", "attributes": {"start": "2030-01-01 09:00:00"}}}
    refused = http.patch(f"{API}/appointments/1", json=late, headers=headers)
    assert refused.status_code == 422


def test_slow_page_fault_delays_one_collection_page(http: FlaskClient) -> None:
    headers = auth(http)
    http.post("/_emulator/faults/slow_page", json={"count": 1, "seconds": 0.4})
    started = time.monotonic()
    assert http.get(f"{API}/users/1", headers=headers).status_code == 200
    single = time.monotonic() - started
    assert http.get(f"{API}/appointments", headers=headers).status_code == 200
    slow = time.monotonic() - started - single
    assert single < 0.3 <= 0.4 <= slow
    started = time.monotonic()
    http.get(f"{API}/appointments", headers=headers)
    assert time.monotonic() - started < 0.3


def test_a_delivery_is_signed_v2_over_timestamp_delivery_id_and_body() -> None:
    """The known answer of tests/test_coconut_signature_vectors.py, computed with OpenSSL: the
    emulator and the receiver share no code, so each is held to it on its own."""
    body = b'{"id":"0b9c6a1e-delivery","type":"appointment.rescheduled"}'
    signed = signature(
        "whsec_coconut_test_0123456789abcdef", 1_767_225_600, "0b9c6a1e-delivery", body
    )
    assert signed == "v2=e0c490cfab1c8cb18e6129a92d6ca6eeef78942ad8d77961b9340f2e570899cc"
