"""The Graph emulator's strict behaviours over HTTPS: delegated tokens from the auth-code flow
(msal, PKCE, the sign-in page), recurring series, stingy delta, limits, notification delivery
and the control API.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import msal
import pytest
import requests

from core.microsoft.graph import tls_context
from exsync.processes import wait_until
from tests.graph_emulator_support import Emulator, Receiver, running
from tests.harness import GRAPH_CLIENT_ID, GRAPH_CLIENT_SECRET, TENANT


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[Emulator]:
    emu = Emulator(tmp_path, ["--notify-retry-scale", "0.01"]).start()
    yield emu
    emu.stop()


def _graph(emu: Emulator, token: str) -> httpx.Client:
    return httpx.Client(
        base_url=f"{emu.base}/v1.0",
        verify=tls_context(str(emu.ca_file)),
        headers={"Authorization": f"Bearer {token}"},
        timeout=15,
    )


def _when(text: str, zone: str = "UTC") -> dict[str, str]:
    return {"dateTime": text, "timeZone": zone}


def _sign_in(emu: Emulator, upn: str) -> dict[str, Any]:
    """msal's auth-code flow with PKCE, the tester picking `upn` on the sign-in page."""
    # requests lets REQUESTS_CA_BUNDLE override a session's verify unless trust_env is off.
    session = requests.Session()
    session.trust_env = False
    session.verify = str(emu.ca_file)
    app = msal.ConfidentialClientApplication(
        GRAPH_CLIENT_ID,
        client_credential=GRAPH_CLIENT_SECRET,
        authority=f"{emu.base}/{TENANT}",
        http_client=session,
        instance_discovery=False,
    )
    flow = app.initiate_auth_code_flow(
        ["Calendars.ReadWrite"], redirect_uri="http://localhost/cb", response_mode="form_post"
    )
    with emu.http() as http:
        page = http.get(flow["auth_uri"])
        assert page.status_code == 200
        assert upn in page.text
        user_id = re.search(rf'value="([^"]+)"[^>]*>[^<]*&lt;{re.escape(upn)}&gt;', page.text)
        assert user_id is not None
        fields = dict(re.findall(r'name="([^"]+)" value="([^"]*)"', page.text))
        fields.pop("user_id", None)
        picked = http.post(urlsplit(flow["auth_uri"]).path, data={**fields,
                           "user_id": user_id.group(1)})  # fmt: skip
    assert picked.status_code == 200
    assert 'action="http://localhost/cb"' in picked.text
    answer = dict(re.findall(r'name="([^"]+)" value="([^"]*)"', picked.text))
    result = app.acquire_token_by_auth_code_flow(flow, answer)
    assert "access_token" in result, result
    return result


def test_delegated_token_reaches_only_own_and_shared_calendars(emulator: Emulator) -> None:
    ana = emulator.add_user("ana@contoso.example")
    ben = emulator.add_user("ben@contoso.example")
    cid = emulator.add_user("cid@contoso.example")
    emulator.control("POST", "/shares", {"owner": ben, "delegate": ana, "role": "write"})

    result = _sign_in(emulator, "ana@contoso.example")
    assert result["id_token_claims"]["oid"] == ana
    assert result["id_token_claims"]["preferred_username"] == "ana@contoso.example"
    payload = result["access_token"].split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert (claims["oid"], claims["appid"], claims["tid"]) == (ana, GRAPH_CLIENT_ID, TENANT)
    body = {"subject": "x", "start": _when("2026-12-01T09:00:00"),
            "end": _when("2026-12-01T10:00:00")}  # fmt: skip
    with _graph(emulator, result["access_token"]) as graph:
        assert graph.get("/me").json()["id"] == ana
        assert graph.post("/me/events", json=body).status_code == 201
        assert graph.post(f"/users/{ben}/calendar/events", json=body).status_code == 201
        denied = graph.get(f"/users/{cid}/events")
        assert denied.status_code == 403
        assert denied.json()["error"]["code"] == "ErrorAccessDenied"

    with _graph(emulator, emulator.app_token()) as graph:
        assert graph.get(f"/users/{cid}/events").status_code == 200
        me = graph.get("/me/events")
        assert me.status_code == 400


def test_refresh_token_and_pkce_are_checked(emulator: Emulator) -> None:
    emulator.add_user("ana@contoso.example")
    result = _sign_in(emulator, "ana@contoso.example")
    token_url = f"/{TENANT}/oauth2/v2.0/token"
    with emulator.http() as http:
        refreshed = http.post(token_url, data={
            "grant_type": "refresh_token", "refresh_token": result["refresh_token"],
            "client_id": GRAPH_CLIENT_ID, "client_secret": GRAPH_CLIENT_SECRET,
        })  # fmt: skip
        assert refreshed.status_code == 200 and refreshed.json()["access_token"]
        verifier = "v" * 50
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
        fields = {"client_id": GRAPH_CLIENT_ID, "response_type": "code",
                  "redirect_uri": "http://localhost/cb", "scope": "openid",
                  "code_challenge": challenge.rstrip(b"=").decode(),
                  "code_challenge_method": "S256",
                  "user_id": emulator.state()["users"][0]["id"]}  # fmt: skip
        picked = http.post(f"/{TENANT}/oauth2/v2.0/authorize", data=fields)
        code = parse_qs(urlsplit(picked.headers["Location"]).query)["code"][0]
        wrong = http.post(token_url, data={
            "grant_type": "authorization_code", "code": code, "code_verifier": "w" * 50,
            "redirect_uri": "http://localhost/cb", "client_id": GRAPH_CLIENT_ID,
            "client_secret": GRAPH_CLIENT_SECRET,
        })  # fmt: skip
        assert wrong.status_code == 400 and wrong.json()["error"] == "invalid_grant"
        bad_secret = http.post(token_url, data={
            "grant_type": "client_credentials", "client_id": GRAPH_CLIENT_ID,
            "client_secret": "nope", "scope": "https://graph.microsoft.com/.default",
        })  # fmt: skip
        assert bad_secret.status_code == 401
        assert "nope" not in bad_secret.text


def test_calls_without_a_valid_token_get_401(emulator: Emulator) -> None:
    with _graph(emulator, "not-a-token") as graph:
        response = graph.get("/users")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "InvalidAuthenticationToken"
    token = emulator.app_token()
    assert emulator.control("POST", "/tokens/expire").status_code == 204
    with _graph(emulator, token) as graph:
        assert graph.get("/users").status_code == 401


def test_recurring_series_expands_in_calendar_view(emulator: Emulator) -> None:
    """A weekly series shows as occurrences; an edited one is an exception; a deleted one is
    gone from the view, and delta sends no @removed for it while the series lives."""
    uid = emulator.add_user("ana@contoso.example", "W. Europe Standard Time")
    series = emulator.control("POST", f"/users/{uid}/events", {
        "subject": "Weekly", "sensitivity": "private",
        "start": _when("2026-12-07T09:00:00", "W. Europe Standard Time"),
        "end": _when("2026-12-07T10:00:00", "W. Europe Standard Time"),
        "recurrence": {"pattern": {"type": "weekly", "interval": 1, "daysOfWeek": ["monday"]},
                       "range": {"type": "numbered", "startDate": "2026-12-07",
                                 "numberOfOccurrences": 4}},
    }).json()  # fmt: skip
    window = {"startDateTime": "2026-12-01T00:00:00Z", "endDateTime": "2027-01-31T00:00:00Z"}
    with _graph(emulator, emulator.app_token()) as graph:
        view = graph.get(f"/users/{uid}/calendarView", params=window).json()["value"]
        assert [e["type"] for e in view] == ["occurrence"] * 4
        assert {e["seriesMasterId"] for e in view} == {series["id"]}
        assert view[0]["start"] == {"dateTime": "2026-12-07T08:00:00.0000000", "timeZone": "UTC"}
        assert view[0]["subject"] == "Weekly"

        delta = graph.get(f"/users/{uid}/calendarView/delta()", params=window).json()
        assert set(delta["value"][0]) == {"@odata.type", "@odata.etag", "id", "type",
                                          "seriesMasterId", "start", "end"}  # fmt: skip
        link = delta["@odata.deltaLink"]

        moved = {"start": _when("2026-12-14T11:00:00Z"), "end": _when("2026-12-14T12:00:00Z")}
        assert graph.patch(f"/users/{uid}/events/{view[1]['id']}", json=moved).status_code == 200
        assert graph.delete(f"/users/{uid}/events/{view[2]['id']}").status_code == 204

        view = graph.get(f"/users/{uid}/calendarView", params=window).json()["value"]
        assert [e["type"] for e in view] == ["occurrence", "exception", "occurrence"]
        assert view[1]["start"]["dateTime"] == "2026-12-14T11:00:00.0000000"
        following = graph.get(link).json()["value"]
        assert all("@removed" not in item for item in following)


def test_all_day_events_and_prefer_time_zone(emulator: Emulator) -> None:
    uid = emulator.add_user("ana@contoso.example")
    with _graph(emulator, emulator.app_token()) as graph:
        bad = graph.post(f"/users/{uid}/events", json={
            "subject": "x", "isAllDay": True,
            "start": _when("2026-12-01T09:00:00"), "end": _when("2026-12-02T00:00:00"),
        })  # fmt: skip
        assert bad.status_code == 400
        made = graph.post(f"/users/{uid}/events", json={
            "subject": "Away", "isAllDay": True, "showAs": "oof",
            "start": _when("2026-12-01T00:00:00", "Pacific Standard Time"),
            "end": _when("2026-12-02T00:00:00", "Pacific Standard Time"),
        })  # fmt: skip
        assert made.status_code == 201
        timed = graph.post(f"/users/{uid}/events", json={
            "subject": "Call", "start": _when("2026-12-03T09:00:00+01:00"),
            "end": _when("2026-12-03T10:00:00+01:00"),
        }).json()  # fmt: skip
        pacific = {"Prefer": 'outlook.timezone="Pacific Standard Time"'}
        got = graph.get(f"/users/{uid}/events/{timed['id']}", headers=pacific).json()
        assert got["start"] == {"dateTime": "2026-12-03T00:00:00.0000000",
                                "timeZone": "Pacific Standard Time"}  # fmt: skip
        away = graph.get(f"/users/{uid}/events/{made.json()['id']}").json()
        assert away["start"]["dateTime"] == "2026-12-01T00:00:00.0000000"
        assert away["end"]["dateTime"] == "2026-12-02T00:00:00.0000000"
        unknown = graph.post(f"/users/{uid}/events", json={"subjekt": "typo",
                             "start": _when("2026-12-01T09:00:00"),
                             "end": _when("2026-12-01T10:00:00")})  # fmt: skip
        assert unknown.status_code == 400


def test_extended_properties_filter_and_expand(emulator: Emulator) -> None:
    uid = emulator.add_user("ana@contoso.example")
    prop = "String {66f5a359-4659-4830-9070-00047ec6ac6e} Name exsync"
    with _graph(emulator, emulator.app_token()) as graph:
        for n, value in enumerate(["ours", ""]):
            body = {"subject": f"e{n}", "start": _when("2026-12-01T09:00:00"),
                    "end": _when("2026-12-01T10:00:00")}  # fmt: skip
            if value:
                body["singleValueExtendedProperties"] = [{"id": prop, "value": value}]
            assert graph.post(f"/users/{uid}/events", json=body).status_code == 201
        found = graph.get(f"/users/{uid}/events", params={
            "$filter": f"singleValueExtendedProperties/Any(ep: ep/id eq '{prop}' and "
                       "ep/value eq 'ours')",
            "$expand": f"singleValueExtendedProperties($filter=id eq '{prop}')",
            "$select": "subject",
        }).json()["value"]  # fmt: skip
    assert [e["subject"] for e in found] == ["e0"]
    assert found[0]["singleValueExtendedProperties"] == [{"id": prop, "value": "ours"}]


def test_extended_property_values_filter_by_prefix_and_substring_ignoring_case(
    emulator: Emulator,
) -> None:
    """Graph's string functions on extended property values: how one listing finds every event
    one deployment marked."""
    uid = emulator.add_user("ana@contoso.example")
    prop = "String {66f5a359-4659-4830-9070-00047ec6ac6e} Name exsync"
    with _graph(emulator, emulator.app_token()) as graph:
        for n, value in enumerate(["dep:appointment:1", "DEP:absence:2", "other:dep:3", ""]):
            body = {"subject": f"e{n}", "start": _when("2026-12-01T09:00:00"),
                    "end": _when("2026-12-01T10:00:00")}  # fmt: skip
            if value:
                body["singleValueExtendedProperties"] = [{"id": prop, "value": value}]
            assert graph.post(f"/users/{uid}/events", json=body).status_code == 201

        def listed(test: str) -> list[dict[str, Any]]:
            answer = graph.get(f"/users/{uid}/events", params={
                "$filter": f"singleValueExtendedProperties/Any(ep: ep/id eq '{prop}' and {test})",
                "$expand": f"singleValueExtendedProperties($filter=id eq '{prop}')",
                "$select": "id,changeKey", "$top": "500",
            })  # fmt: skip
            assert answer.status_code == 200, answer.text
            return answer.json()["value"]  # type: ignore[no-any-return]

        prefixed = listed("startswith(ep/value, 'dep:')")
        assert sorted(e["singleValueExtendedProperties"][0]["value"] for e in prefixed) == [
            "DEP:absence:2", "dep:appointment:1",
        ]  # fmt: skip
        assert all(set(e) >= {"id", "changeKey"} and "subject" not in e for e in prefixed)
        assert [e["singleValueExtendedProperties"][0]["value"] for e in
                listed("contains(ep/value, 'ABSENCE')")] == ["DEP:absence:2"]  # fmt: skip
        bad = graph.get(f"/users/{uid}/events", params={"$filter": "startswith(subject, 3)"})
        assert bad.status_code == 400


def test_batches_are_counted_with_their_inner_requests(emulator: Emulator) -> None:
    uid = emulator.add_user("ana@contoso.example")
    headers = {"Content-Type": "application/json"}
    body = {"subject": "b", "start": _when("2026-12-01T09:00:00"),
            "end": _when("2026-12-01T10:00:00")}  # fmt: skip
    with _graph(emulator, emulator.app_token()) as graph:
        answer = graph.post("/$batch", json={"requests": [
            {"id": str(n), "method": "POST", "url": f"/users/{uid}/events", "headers": headers,
             "body": body} for n in range(3)
        ]})  # fmt: skip
        assert answer.status_code == 200
    summary = emulator.control("GET", "/summary").raise_for_status().json()
    requests = summary["counters"]["requests"]
    assert requests["POST /v1.0/$batch"] == 1
    assert requests["POST /v1.0/users/<user>/events"] == 3
    assert summary["counters"]["batched"] == 3
    assert summary["events"] == 3


def test_a_throttle_fault_can_target_one_method_inside_a_batch(emulator: Emulator) -> None:
    uid = emulator.add_user("ana@contoso.example")
    spec = {"kind": "throttle", "mailbox": uid, "method": "POST", "retry_after": 3, "count": 1}
    assert emulator.control("POST", "/faults", spec).status_code == 201
    assert emulator.control("POST", "/faults", {**spec, "method": "post"}).status_code == 400
    headers = {"Content-Type": "application/json"}
    body = {"subject": "b", "start": _when("2026-12-01T09:00:00"),
            "end": _when("2026-12-01T10:00:00")}  # fmt: skip
    with _graph(emulator, emulator.app_token()) as graph:
        answer = graph.post("/$batch", json={"requests": [
            {"id": "read", "method": "GET", "url": f"/users/{uid}/events"},
            {"id": "write", "method": "POST", "url": f"/users/{uid}/events", "headers": headers,
             "body": body, "dependsOn": ["read"]},
        ]})  # fmt: skip
    inner = {r["id"]: r for r in answer.json()["responses"]}
    assert inner["read"]["status"] == 200
    assert inner["write"]["status"] == 429
    assert inner["write"]["headers"]["Retry-After"] == "3"


def test_mailbox_concurrency_and_rate_limits(tmp_path: Path) -> None:
    emu = Emulator(tmp_path, ["--max-concurrency", "2", "--latency", "0.5", "--rate-limit", "6",
                              "--rate-window", "60"]).start()  # fmt: skip
    try:
        uid = emu.add_user("ana@contoso.example")
        token = emu.app_token()

        def call(_: int) -> httpx.Response:
            with _graph(emu, token) as graph:
                return graph.get(f"/users/{uid}/events")

        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(call, range(4)))
        statuses = sorted(r.status_code for r in answers)
        assert statuses == [200, 200, 429, 429]
        limited = next(r for r in answers if r.status_code == 429)
        assert limited.json()["error"] == {**limited.json()["error"],
                                           "code": "ApplicationThrottled",
                                           "message": "Application is over its "
                                                      "MailboxConcurrency limit."}  # fmt: skip
        assert limited.headers["Retry-After"].isdigit()
        answers = [call(n) for n in range(5)]
        assert [r.status_code for r in answers] == [200, 200, 200, 200, 429]
        assert answers[-1].json()["error"]["code"] == "ApplicationThrottled"
        assert int(answers[-1].headers["Retry-After"]) >= 1
        assert emu.state()["counters"]["throttled"] == 3
    finally:
        emu.stop()


def _subscribe(graph: httpx.Client, uid: str, url: str, **extra: Any) -> dict[str, Any]:
    body = {
        "changeType": "created,updated,deleted",
        "notificationUrl": url,
        "resource": f"users/{uid}/events",
        "clientState": "cs",
        "expirationDateTime": (datetime.now(UTC) + timedelta(hours=2)).isoformat(),
        **extra,
    }
    response = graph.post("/subscriptions", json=body)  # fmt: skip
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def test_notifications_retry_until_the_endpoint_answers_2xx(emulator: Emulator) -> None:
    uid = emulator.add_user("ana@contoso.example")
    receiver = Receiver(status=500)
    with running(receiver) as url, _graph(emulator, emulator.app_token()) as graph:
        _subscribe(graph, uid, url, changeType="deleted")
        made = emulator.control("POST", f"/users/{uid}/events", {
            "subject": "x", "start": _when("2026-12-01T09:00:00"),
            "end": _when("2026-12-01T10:00:00")}).json()  # fmt: skip
        emulator.control("DELETE", f"/users/{uid}/events/{made['id']}")
        wait_until(lambda: len(receiver.received()) >= 2, 10, what="retried notification")
        receiver.status = 202
        wait_until(lambda: emulator.state()["counters"]["notifications"]["delivered"] == 1, 10,
                   what="delivery after the endpoint recovers")  # fmt: skip
    assert {n["changeType"] for n in receiver.received()} == {"deleted"}
    assert {n["resourceData"]["id"] for n in receiver.received()} == {made["id"]}


def test_lifecycle_and_expiry_through_the_control_api(emulator: Emulator) -> None:
    uid = emulator.add_user("ana@contoso.example")
    receiver = Receiver()
    with running(receiver) as url, _graph(emulator, emulator.app_token()) as graph:
        first = _subscribe(graph, uid, url, lifecycleNotificationUrl=url)
        second = _subscribe(graph, uid, url, changeType="deleted")  # not a duplicate: no 409
        sent = emulator.control("POST", f"/subscriptions/{first['id']}/lifecycle",
                                {"event": "subscriptionRemoved"})  # fmt: skip
        assert sent.json() == {"sent": True, "event": "subscriptionRemoved"}
        wait_until(lambda: receiver.received(), 10, what="lifecycle notification")
        note = receiver.received()[0]
        assert note["lifecycleEvent"] == "subscriptionRemoved"
        assert note["clientState"] == "cs"
        assert graph.get(f"/subscriptions/{first['id']}").status_code == 404
        assert emulator.control("POST", f"/subscriptions/{second['id']}/expire").status_code == 204
        assert graph.get(f"/subscriptions/{second['id']}").status_code == 404
        assert graph.get("/subscriptions").json()["value"] == []


def test_subscription_rules(emulator: Emulator) -> None:
    uid = emulator.add_user("ana@contoso.example")
    receiver = Receiver()
    with running(receiver) as url, _graph(emulator, emulator.app_token()) as graph:
        soon = (datetime.now(UTC) + timedelta(minutes=5)).isoformat()
        short = _subscribe(graph, uid, url, expirationDateTime=soon)
        expiry = datetime.fromisoformat(short["expirationDateTime"].replace("0Z", "+00:00"))
        assert expiry > datetime.now(UTC) + timedelta(minutes=44)
        listed = graph.get("/subscriptions").json()["value"]
        assert [s["clientState"] for s in listed] == [None]
        event = graph.post("/subscriptions", json={
            "changeType": "updated", "notificationUrl": url, "clientState": "cs",
            "resource": f"users/{uid}/events/AAMkAGabc",
            "expirationDateTime": soon})  # fmt: skip
        assert event.status_code == 400
        renew = graph.patch(f"/subscriptions/{short['id']}", json={})
        assert renew.status_code == 400
        plain = graph.post("/subscriptions", json={
            "changeType": "updated", "notificationUrl": "http://web:8000/hook",
            "resource": f"users/{uid}/events", "expirationDateTime": soon})  # fmt: skip
        assert plain.status_code == 400 and "HTTPS" in plain.json()["error"]["message"]


def test_batch_depends_on_and_limits(emulator: Emulator) -> None:
    uid = emulator.add_user("ana@contoso.example")
    headers = {"Content-Type": "application/json"}
    body = {"subject": "b", "start": _when("2026-12-01T09:00:00"),
            "end": _when("2026-12-01T10:00:00")}  # fmt: skip
    with _graph(emulator, emulator.app_token()) as graph:
        answer = graph.post("/$batch", json={"requests": [
            {"id": "1", "method": "GET", "url": f"/users/{uid}/events/missing"},
            {"id": "2", "method": "POST", "url": f"/users/{uid}/events", "headers": headers,
             "body": body, "dependsOn": ["1"]},
            {"id": "3", "method": "POST", "url": f"users/{uid}/events", "headers": headers,
             "body": body},
        ]})  # fmt: skip
        assert answer.status_code == 200
        statuses = {r["id"]: r["status"] for r in answer.json()["responses"]}
        assert statuses == {"1": 404, "2": 424, "3": 201}
        many = [{"id": str(n), "method": "GET", "url": "/users"} for n in range(21)]
        assert graph.post("/$batch", json={"requests": many}).status_code == 400
        no_type = [{"id": "1", "method": "POST", "url": f"/users/{uid}/events", "body": body}]
        assert graph.post("/$batch", json={"requests": no_type}).status_code == 400


def test_faults_are_checked_and_forbidden_mailboxes_answer_403(emulator: Emulator) -> None:
    uid = emulator.add_user("ana@contoso.example")
    assert emulator.control("POST", "/faults", {"kind": "explode"}).status_code == 400
    assert emulator.control("POST", "/faults", {"kind": "throttle", "shares": 1}).status_code == 400
    assert (
        emulator.control("POST", "/faults", {"kind": "forbidden", "mailbox": uid}).status_code
        == 201
    )
    with _graph(emulator, emulator.app_token()) as graph:
        window = {"startDateTime": "2026-12-01", "endDateTime": "2026-12-02"}
        denied = graph.get(f"/users/{uid}/calendarView", params=window)
        assert denied.status_code == 403
        assert emulator.control("DELETE", "/faults").status_code == 204
        assert graph.get(f"/users/{uid}/events").status_code == 200


def test_notification_faults_drop_and_duplicate(emulator: Emulator) -> None:
    uid = emulator.add_user("ana@contoso.example")
    receiver = Receiver()
    with running(receiver) as url, _graph(emulator, emulator.app_token()) as graph:
        _subscribe(graph, uid, url, changeType="deleted")
        ids = [emulator.control("POST", f"/users/{uid}/events", {
            "subject": str(n), "start": _when("2026-12-01T09:00:00"),
            "end": _when("2026-12-01T10:00:00")}).json()["id"] for n in range(2)]  # fmt: skip
        emulator.control("POST", "/faults", {"kind": "notification_drop", "count": 1})
        emulator.control("DELETE", f"/users/{uid}/events/{ids[0]}")
        emulator.control("POST", "/faults", {"kind": "notification_duplicate", "count": 1})
        emulator.control("DELETE", f"/users/{uid}/events/{ids[1]}")
        wait_until(lambda: len(receiver.received()) >= 2, 10, what="duplicated notification")
        time.sleep(0.3)
    assert [n["resourceData"]["id"] for n in receiver.received()] == [ids[1], ids[1]]
    assert emulator.state()["counters"]["notifications"]["dropped"] == 1


def test_notification_faults_delay_and_reorder(emulator: Emulator) -> None:
    uid = emulator.add_user("ana@contoso.example")
    receiver = Receiver()
    with running(receiver) as url, _graph(emulator, emulator.app_token()) as graph:
        _subscribe(graph, uid, url, changeType="deleted")
        ids = [emulator.control("POST", f"/users/{uid}/events", {
            "subject": str(n), "start": _when("2026-12-01T09:00:00"),
            "end": _when("2026-12-01T10:00:00")}).json()["id"] for n in range(4)]  # fmt: skip
        spec = {"kind": "notification_reorder", "batch": 3, "hold_seconds": 30}
        assert emulator.control("POST", "/faults", spec).status_code == 201
        for event_id in ids[:3]:
            emulator.control("DELETE", f"/users/{uid}/events/{event_id}")
        wait_until(lambda: len(receiver.received()) == 3, 10, what="the reordered batch")
        assert [n["resourceData"]["id"] for n in receiver.received()] == ids[2::-1]

        spec = {"kind": "notification_delay", "seconds": 1.5, "count": 1}
        assert emulator.control("POST", "/faults", spec).status_code == 201
        started = time.monotonic()
        emulator.control("DELETE", f"/users/{uid}/events/{ids[3]}")
        wait_until(lambda: len(receiver.received()) == 4, 10, what="the delayed notification")
        assert time.monotonic() - started >= 1.5


def test_slow_endpoint_has_new_notifications_dropped(emulator: Emulator) -> None:
    """Answers slower than the 3 s budget mark the endpoint; past 15 % slow, Graph drops."""
    uid = emulator.add_user("ana@contoso.example")
    receiver = Receiver()
    with running(receiver) as url, _graph(emulator, emulator.app_token()) as graph:
        _subscribe(graph, uid, url, changeType="deleted")
        receiver.delay = 3.3
        ids = [emulator.control("POST", f"/users/{uid}/events", {
            "subject": str(n), "start": _when("2026-12-01T09:00:00"),
            "end": _when("2026-12-01T10:00:00")}).json()["id"] for n in range(11)]  # fmt: skip
        for event_id in ids[:10]:
            emulator.control("DELETE", f"/users/{uid}/events/{event_id}")
        wait_until(lambda: emulator.state()["counters"]["notifications"]["sent"] >= 10, 20,
                   what="ten slow attempts")  # fmt: skip
        time.sleep(3.5)
        receiver.delay = 0
        dropped = emulator.state()["counters"]["notifications"]["dropped"]
        emulator.control("DELETE", f"/users/{uid}/events/{ids[10]}")
        wait_until(
            lambda: emulator.state()["counters"]["notifications"]["dropped"] == dropped + 1,
            5,
            what="the new notification to be dropped",
        )
    assert ids[10] not in {n["resourceData"]["id"] for n in receiver.received()}


def test_delta_reports_changes_outside_the_window_as_removed(emulator: Emulator) -> None:
    """As Outlook does: a client must ignore @removed for ids it never had."""
    uid = emulator.add_user("ana@contoso.example")
    window = {"startDateTime": "2026-12-01T00:00:00Z", "endDateTime": "2026-12-31T00:00:00Z"}
    with _graph(emulator, emulator.app_token()) as graph:
        first = graph.get(f"/users/{uid}/calendarView/delta", params=window).json()
        assert first["value"] == []
        outside = graph.post(f"/users/{uid}/events", json={
            "subject": "later", "start": _when("2027-03-01T09:00:00"),
            "end": _when("2027-03-01T10:00:00")}).json()  # fmt: skip
        following = graph.get(first["@odata.deltaLink"]).json()["value"]
    assert following == [{"@odata.type": "#microsoft.graph.event", "id": outside["id"],
                           "@removed": {"reason": "deleted"}}]  # fmt: skip
