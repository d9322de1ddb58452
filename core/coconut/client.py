"""The service's client for Coconut's admin ("B2B") API, as written down in coconut/openapi.yaml.

Synchronous on purpose: it runs inside RQ jobs, one call after another. What it takes care of:

- OAuth2 client credentials at `{base_url}/oauth/token`; the token is cached until shortly
  before it expires, and a 401 fetches a new one once and repeats the call (tokens can be
  revoked or expire mid-run).
- 429 (honouring `Retry-After`), 503 and connection errors are retried a few times with capped
  waits (tenacity), then raised.
- Lists follow `links.next` verbatim with `limit=100`; page numbers are never built here,
  because the server may insert or delete rows between pages.

It builds the records of core.coconut.models and raises its errors (the table is there).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import httpx
from tenacity import (
    RetryCallState,
    retry,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from core import logs
from core.coconut.models import (
    Absence,
    AbsenceWrite,
    Appointment,
    Attendee,
    CoconutError,
    Conflict,
    Location,
    NotFound,
    Service,
    Staff,
    Unavailable,
)

log = logging.getLogger(__name__)

PAGE_LIMIT = 100
ATTEMPTS = 5
MAX_WAIT_SECONDS = 30.0
TOKEN_MARGIN_SECONDS = 60.0
APPOINTMENT_INCLUDE = "attendees,location,services"
JSONAPI = "application/vnd.api+json"
EXTERNAL_PROVIDER = "microsoft_exchange"


_backoff = wait_exponential_jitter(multiplier=0.5, max=8.0, jitter=0.5)


def _wait(state: RetryCallState) -> float:
    """Coconut's Retry-After when it gave one, else exponential backoff; both capped."""
    exc = state.outcome.exception() if state.outcome else None
    hint = exc.retry_after if isinstance(exc, Unavailable) else None
    if hint is not None:
        return min(max(hint, 0.0), MAX_WAIT_SECONDS)
    return _backoff(state)


_retrying = retry(
    retry=retry_if_exception_type(Unavailable),
    wait=_wait,
    stop=stop_after_attempt(ATTEMPTS),
    reraise=True,
)


class CoconutClient:
    """One tenant's admin API, reached with client credentials; thread-safe token cache."""

    def __init__(
        self, base_url: str, client_id: str, client_secret: str, *, timeout: float = 10.0
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._client_id = client_id
        self._client_secret = client_secret
        self._http = httpx.Client(
            timeout=timeout, headers={"Accept": JSONAPI, "User-Agent": "exsync/coconut-client"}
        )
        self._token: str | None = None
        self._token_expires = 0.0
        self._token_lock = threading.Lock()

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> CoconutClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ users

    def get_user(self, user_id: int) -> Staff | None:
        body = self._get_or_none(f"/users/{user_id}")
        return None if body is None else staff_from(body["data"])

    def users(
        self, *, takes_appointments: bool | None = None, email: str | None = None
    ) -> Iterator[Staff]:
        params = _filters(takes_appointments=takes_appointments, email=email)
        for page in self._pages("/users", params):
            yield from (staff_from(item) for item in page["data"])

    # ------------------------------------------------------------ appointments

    def get_appointment(self, appointment_id: int) -> Appointment | None:
        body = self._get_or_none(
            f"/appointments/{appointment_id}", {"include": APPOINTMENT_INCLUDE}
        )
        if body is None:
            return None
        return appointment_from(body["data"], _index(body.get("included", [])))

    def appointments(
        self,
        *,
        updated_since: datetime | None = None,
        user: int | None = None,
        start_after: datetime | None = None,
        start_before: datetime | None = None,
    ) -> Iterator[Appointment]:
        params = _filters(
            updated_since=updated_since, user=user, start_after=start_after,
            start_before=start_before,
        )  # fmt: skip
        params["include"] = APPOINTMENT_INCLUDE
        for page in self._pages("/appointments", params):
            included = _index(page.get("included", []))
            yield from (appointment_from(item, included) for item in page["data"])

    # ------------------------------------------------------------ absences

    def get_absence(self, absence_id: int) -> Absence | None:
        body = self._get_or_none(f"/absences/{absence_id}")
        return None if body is None else absence_from(body["data"])

    def absences(
        self, *, user: int | None = None, source: str | None = None, external_id: str | None = None
    ) -> Iterator[Absence]:
        params = _filters(user=user, source=source, external_id=external_id)
        for page in self._pages("/absences", params):
            yield from (absence_from(item) for item in page["data"])

    def create_absence(self, new: AbsenceWrite) -> Absence:
        """Always an external block; a repeat of (user_id, external_id) raises Conflict."""
        attrs = {
            "user_id": new.user_id,
            **_absence_times(new),
            "source": "external",
            "external_provider": EXTERNAL_PROVIDER,
            "external_id": new.external_id,
            "external_version": new.external_version,
        }
        body = self._call("POST", "/absences", json=_document("absences", attrs))
        return absence_from(body["data"])

    def update_absence(
        self, absence_id: int, new: AbsenceWrite, if_match: int | None = None
    ) -> Absence:
        """user_id and external_id cannot change in Coconut; they are not sent."""
        attrs = {**_absence_times(new), "external_version": new.external_version}
        body = self._call(
            "PATCH", f"/absences/{absence_id}",
            json=_document("absences", attrs, absence_id), headers=_if_match(if_match),
        )  # fmt: skip
        return absence_from(body["data"])

    def delete_absence(self, absence_id: int, if_match: int | None = None) -> bool:
        """True when deleted now, False when it was already gone."""
        try:
            self._call("DELETE", f"/absences/{absence_id}", headers=_if_match(if_match))
        except NotFound:
            return False
        return True

    # ------------------------------------------------------------ webhooks

    def create_webhook(self, url: str, events: list[str], secret: str | None = None) -> dict:
        """The new subscription's attributes plus `id`; `secret` is only ever shown here."""
        attrs: dict[str, Any] = {"url": url, "events": events}
        if secret is not None:
            attrs["secret"] = secret
        body = self._call("POST", "/webhooks", json=_document("webhooks", attrs))
        return _flat(body["data"])

    def webhooks(self) -> list[dict]:
        return [_flat(item) for page in self._pages("/webhooks", {}) for item in page["data"]]

    def delete_webhook(self, webhook_id: int) -> None:
        """Idempotent: a subscription already gone is not an error."""
        try:
            self._call("DELETE", f"/webhooks/{webhook_id}")
        except NotFound:
            return

    # ------------------------------------------------------------ transport

    def _get_or_none(self, path: str, params: dict[str, str] | None = None) -> Any:
        try:
            return self._call("GET", path, params=params)
        except NotFound:
            return None

    def _pages(self, path: str, params: dict[str, str]) -> Iterator[Any]:
        """Every page of a collection, following `links.next` exactly as given."""
        body = self._call("GET", path, params={**params, "limit": str(PAGE_LIMIT)})
        while True:
            yield body
            next_url = (body.get("links") or {}).get("next")
            if not next_url:
                return
            body = self._call("GET", next_url)

    @_retrying
    def _call(
        self,
        method: str,
        path_or_url: str,
        *,
        params: dict[str, str] | None = None,
        json: Any = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        """One API call with a fresh token on 401 (once); errors become CoconutError."""
        url = path_or_url if "://" in path_or_url else f"{self.base_url}{path_or_url}"
        response = self._send(method, url, params, json, headers, self._bearer())
        if response.status_code == 401:
            self._forget_token()
            response = self._send(method, url, params, json, headers, self._bearer())
        if response.status_code == 204:
            return None
        if response.is_success:
            return response.json()
        raise _error(response)

    def _send(
        self,
        method: str,
        url: str,
        params: dict[str, str] | None,
        json: Any,
        headers: dict[str, str] | None,
        token: str,
    ) -> httpx.Response:
        all_headers = {**(headers or {}), "Authorization": f"Bearer {token}"}
        if json is not None:
            all_headers["Content-Type"] = JSONAPI
        try:
            return self._http.request(method, url, params=params, json=json, headers=all_headers)
        except httpx.TransportError as exc:
            raise Unavailable(f"no answer from Coconut: {type(exc).__name__}") from exc

    def _bearer(self) -> str:
        with self._token_lock:
            if self._token is None or time.monotonic() >= self._token_expires:
                self._token, lifetime = self._fetch_token()
                margin = min(TOKEN_MARGIN_SECONDS, lifetime / 10)
                self._token_expires = time.monotonic() + lifetime - margin
            return self._token

    def _forget_token(self) -> None:
        with self._token_lock:
            self._token = None

    def _fetch_token(self) -> tuple[str, float]:
        form = {
            "grant_type": "client_credentials",
            "client_id": self._client_id,
            "client_secret": self._client_secret,
        }
        try:
            response = self._http.post(f"{self.base_url}/oauth/token", data=form)
        except httpx.TransportError as exc:
            raise Unavailable(
                f"no answer from Coconut's token endpoint: {type(exc).__name__}"
            ) from exc
        if not response.is_success:
            raise _error(response)
        body = response.json()
        logs.redact_rotating(body.get("access_token"))
        log.info("coconut.token_fetched", extra={"expires_in": body.get("expires_in")})
        return body["access_token"], float(body.get("expires_in", 3600))


# ---------------------------------------------------------------- parsing


def _error(response: httpx.Response) -> CoconutError:
    """JSON:API `errors[0]` (or an OAuth error body) as the right exception."""
    status = response.status_code
    code, detail, meta = None, response.reason_phrase, {}
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and body.get("errors"):
        first = body["errors"][0]
        code, detail, meta = first.get("code"), first.get("detail", detail), first.get("meta", {})
    elif isinstance(body, dict) and "error" in body:
        code, detail = body["error"], body.get("error_description", detail)
    reason = f"Coconut answered {status} {code or ''}: {detail}".replace("  ", " ")
    if status == 404:
        return NotFound(reason, status, code)
    if status == 409:
        existing = meta.get("existing_id")
        return Conflict(reason, status, code, int(existing) if existing is not None else None)
    if status in (429, 503):
        return Unavailable(reason, status, code, _retry_after(response))
    return CoconutError(reason, status, code)


def _retry_after(response: httpx.Response) -> float | None:
    raw = response.headers.get("Retry-After")
    try:
        return float(raw) if raw is not None else None
    except ValueError:
        return None


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value)


def _index(included: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(item["type"], str(item["id"])): item for item in included}


def _flat(item: dict[str, Any]) -> dict[str, Any]:
    return {"id": int(item["id"]), **item["attributes"]}


def staff_from(item: dict[str, Any]) -> Staff:
    a = item["attributes"]
    return Staff(
        id=int(item["id"]), first_name=a["first_name"], last_name=a["last_name"],
        email=a["email"], timezone=a["timezone"], takes_appointments=a["takes_appointments"],
        active=a["active"], role=a["role"], version=a["version"],
    )  # fmt: skip


def location_from(item: dict[str, Any]) -> Location:
    a = item["attributes"]
    return Location(
        id=int(item["id"]), name=a["name"], address=a.get("address"), city=a.get("city"),
        prov_state=a.get("prov_state"), country=a.get("country"), zip_postal=a.get("zip_postal"),
        timezone=a["timezone"], virtual=bool(a.get("virtual")),
    )  # fmt: skip


def appointment_from(
    item: dict[str, Any], included: dict[tuple[str, str], dict[str, Any]]
) -> Appointment:
    a = item["attributes"]
    rels = item.get("relationships", {})

    def related(name: str, kind: str) -> list[dict[str, Any]]:
        data = (rels.get(name) or {}).get("data") or []
        refs = data if isinstance(data, list) else [data]
        return [included[(kind, str(r["id"]))] for r in refs if (kind, str(r["id"])) in included]

    locations = related("location", "locations")
    return Appointment(
        id=int(item["id"]),
        status=a["status"],
        start=_time(a["start"]),
        end=_time(a["end"]),
        timezone=a["timezone"],
        staff_id=a.get("staff_id"),
        additional_staff_ids=tuple(a.get("additional_staff_id") or ()),
        location=location_from(locations[0]) if locations else None,
        services=tuple(
            Service(int(s["id"]), s["attributes"]["name"], s["attributes"]["duration"])
            for s in related("services", "services")
        ),
        attendees=tuple(
            Attendee(
                int(x["id"]),
                x["attributes"]["first_name"],
                x["attributes"]["last_name"],
                x["attributes"]["status"],
            )
            for x in related("attendees", "attendees")
        ),
        notes=a.get("notes"),
        meeting_url=a.get("meeting_url"),
        confirmation_code=a.get("confirmation_code"),
        version=a["version"],
        updated_at=_time(a["updated_at"]),
        meeting_method=a.get("meeting_method"),
    )


def absence_from(item: dict[str, Any]) -> Absence:
    a = item["attributes"]
    return Absence(
        id=int(item["id"]), user_id=a["user_id"], start=_time(a["start"]), end=_time(a["end"]),
        all_day=a["all_day"], timezone=a["timezone"], title=a["title"], notes=a.get("notes"),
        source=a["source"], external_provider=a.get("external_provider"),
        external_id=a.get("external_id"), external_version=a.get("external_version"),
        version=a["version"], updated_at=_time(a["updated_at"]),
    )  # fmt: skip


# ---------------------------------------------------------------- request pieces


def _filters(**values: Any) -> dict[str, str]:
    """`filter[name]=value` for the values given; times as ISO-8601 in UTC."""
    out: dict[str, str] = {}
    for name, value in values.items():
        if value is None:
            continue
        if isinstance(value, datetime):
            value = _aware(value, name).astimezone(UTC).isoformat()
        elif isinstance(value, bool):
            value = "true" if value else "false"
        out[f"filter[{name}]"] = str(value)
    return out


def _aware(value: datetime, name: str) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, got {value!r}")
    return value


def _absence_times(new: AbsenceWrite) -> dict[str, Any]:
    zone = ZoneInfo(new.timezone)
    return {
        "start": _aware(new.start, "start").astimezone(zone).isoformat(),
        "end": _aware(new.end, "end").astimezone(zone).isoformat(),
        "all_day": new.all_day,
        "timezone": new.timezone,
        "title": new.title,
        "notes": new.notes,
    }


def _document(kind: str, attrs: dict[str, Any], record_id: int | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {"type": kind, "attributes": attrs}
    if record_id is not None:
        data["id"] = str(record_id)
    return {"data": data}


def _if_match(version: int | None) -> dict[str, str]:
    return {} if version is None else {"If-Match": str(version)}
