"""The emulator's HTTP face: Coconut's admin ("B2B") API, its token endpoint, and the controls.

Everything under `/api/v2/b2b` follows core/coconut_openapi.yaml: JSON:API documents,
`filter[...]`/`include`/`sort`/`page`/`limit` on collections, `links.next` for paging, errors as
`{"errors": [...]}`. Every call but the token endpoint needs a bearer token with the right scope,
counts against the client's rate limit, and may be hit by an armed `api_error` fault. Requests
are checked strictly (unknown filters, attributes and parameters are errors), because a kind
emulator hides the client bugs the real service would expose.

`/_emulator/...` is not Coconut: it lets tests and the demo inspect state and inject faults.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from flask import Flask, Response, g, json, request
from werkzeug.exceptions import HTTPException

from emulators.coconut.faults import FaultSpecError, parse_trigger
from emulators.coconut.jsonapi import ApiError, parse_query_time, resource
from emulators.coconut.store import Store, delivery_json

API = "/api/v2/b2b"
JSONAPI = "application/vnd.api+json"
DEFAULT_LIMIT = 25
MAX_LIMIT = 100
# setting -> (accepted types, smallest value); mirrors EmulatorSettings in the OpenAPI file.
SETTINGS_TYPES: dict[str, tuple[tuple[type, ...], float]] = {
    "token_lifetime": ((int,), 1),
    "rate_limit": ((int,), 1),
    "retry_scale": ((int, float), 0),
    "max_attempts": ((int,), 1),
    "disable_after": ((int,), 1),
    "max_absence_days": ((int, type(None)), 1),
}

# filter name -> how to read its value; collections accept only the filters listed here.
Parse = Callable[[str, str], Any]


def as_int(value: str, parameter: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise bad_parameter(parameter, f"expected an integer, got {value!r}") from None


def as_bool(value: str, parameter: str) -> bool:
    if value in ("true", "1"):
        return True
    if value in ("false", "0"):
        return False
    raise bad_parameter(parameter, f"expected true or false, got {value!r}")


def as_str(value: str, parameter: str) -> str:
    return value


def as_time(value: str, parameter: str) -> datetime:
    return parse_query_time(value, parameter)


FILTERS: dict[str, dict[str, Parse]] = {
    "users": {
        "email": as_str,
        "takes_appointments": as_bool,
        "location": as_int,
        "service": as_int,
        "updated_since": as_time,
        "active": as_bool,
    },
    "assignments": {"user": as_int},
    "locations": {},
    "services": {},
    "appointments": {
        "user": as_int,
        "location": as_int,
        "status": as_str,
        "start_after": as_time,
        "start_before": as_time,
        "updated_since": as_time,
    },
    "absences": {
        "user": as_int,
        "source": as_str,
        "external_id": as_str,
        "updated_since": as_time,
    },
    "webhooks": {},
}
COLLECTIONS = {
    "users", "assignments", "locations_list", "services_list", "appointments", "absences",
    "webhooks",
}  # fmt: skip
SORTS = {"id", "updated_at", "start"}
INCLUDES = {"appointments": {"attendees", "location", "services", "users"}}
SCOPE_FOR = {
    ("users", "GET"): "users:read",
    ("users", "PATCH"): "users:write",
    ("assignments", "GET"): "users:read",
    ("locations", "GET"): "appointments:read",
    ("services", "GET"): "appointments:read",
    ("clients", "GET"): "appointments:read",
    ("appointments", "GET"): "appointments:read",
    ("appointments", "POST"): "appointments:write",
    ("appointments", "PATCH"): "appointments:write",
    ("appointments", "DELETE"): "appointments:write",
    ("absences", "GET"): "absences:read",
    ("absences", "POST"): "absences:write",
    ("absences", "PATCH"): "absences:write",
    ("absences", "DELETE"): "absences:write",
}


def bad_parameter(parameter: str, detail: str) -> ApiError:
    return ApiError(
        400, "invalid_parameter", "Invalid query parameter", detail, parameter=parameter
    )


def create_app(store: Store) -> Flask:
    """The Flask app over one store; the sender threads are started by the caller."""
    app = Flask(__name__)
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions["coconut_store"] = store

    def base_url() -> str:
        return request.host_url.rstrip("/") + API

    # ------------------------------------------------------------ cross-cutting

    @app.before_request
    def guard() -> Response | None:
        """Auth, rate limit and injected API errors, in the order a real gateway applies them."""
        g.started = time.monotonic()
        path = request.path
        if not path.startswith(API + "/") or path == f"{API}/oauth/token":
            return None
        fault = store.fire("api_error")
        if fault is not None:
            headers = {}
            if fault["status"] in (429, 503):
                headers["Retry-After"] = str(fault["retry_after"])
            raise ApiError(
                fault["status"],
                "injected_fault",
                "Service unavailable" if fault["status"] != 429 else "Too many requests",
                "injected by the emulator's api_error fault",
                headers=headers,
            )
        token = bearer_token()
        found = store.authenticate(token) if token else None
        if found is None:
            detail = "missing bearer token" if not token else "token is invalid or expired"
            raise ApiError(
                401,
                "unauthenticated",
                "Unauthenticated",
                detail,
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
        allowed, remaining, retry_after = store.take_rate(found.client_id)
        limit = str(store.settings.rate_limit)
        g.rate_headers = {"X-RateLimit-Limit": limit, "X-RateLimit-Remaining": str(remaining)}
        if not allowed:
            raise ApiError(
                429,
                "rate_limited",
                "Too many requests",
                f"more than {limit} requests in 60 seconds",
                headers={**g.rate_headers, "Retry-After": str(retry_after)},
            )
        needed = scope_needed(path, request.method)
        if needed is not None and needed not in found.scopes:
            raise ApiError(
                403, "insufficient_scope", "Forbidden", f"this call needs scope {needed}"
            )
        if request.method == "GET" and request.endpoint in COLLECTIONS:
            slow = store.fire("slow_page")
            if slow is not None:
                time.sleep(slow["seconds"])  # before any lock: other calls go on meanwhile
        return None

    @app.after_request
    def count(response: Response) -> Response:
        for name, value in getattr(g, "rate_headers", {}).items():
            response.headers.setdefault(name, value)
        writes = request.method in ("POST", "PATCH", "DELETE")
        if writes and request.path.startswith(API + "/") and response.status_code < 300:
            slow = store.fire("slow_write")
            if slow is not None:
                time.sleep(slow["seconds"])  # done already; the answer is what is late
        rule = request.url_rule.rule if request.url_rule else "unmatched"
        with store.lock:
            store.requests.count(f"{request.method} {rule}", response.status_code)
        return response

    @app.errorhandler(ApiError)
    def api_error(exc: ApiError) -> Response:
        response = document(exc.document(), exc.status)
        if exc.code in (
            "invalid_client",
            "invalid_scope",
            "unsupported_grant_type",
            "invalid_request",
        ):
            # OAuth endpoint errors use RFC 6749's shape, not JSON:API.
            response = app.response_class(
                json.dumps({"error": exc.code, "error_description": exc.detail}),
                status=exc.status,
                mimetype="application/json",
            )
        response.headers.update(exc.headers)
        return response

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        code = {404: "not_found", 405: "method_not_allowed", 415: "unsupported_media_type"}.get(
            status, "bad_request"
        )
        error = ApiError(status, code, exc.name, exc.description or exc.name)
        return document(error.document(), status)

    # ------------------------------------------------------------ token

    @app.post(f"{API}/oauth/token")
    def token() -> Response:
        form = request.form
        client_id, client_secret = form.get("client_id", ""), form.get("client_secret", "")
        basic = basic_credentials()
        if basic is not None:
            client_id, client_secret = basic
        if form.get("grant_type") != "client_credentials":
            raise ApiError(
                400,
                "unsupported_grant_type",
                "unsupported_grant_type",
                f"grant_type must be client_credentials, got {form.get('grant_type')!r}",
            )
        if not client_id or not client_secret:
            raise ApiError(
                400,
                "invalid_request",
                "invalid_request",
                "client_id and client_secret are required",
            )
        body = store.issue_token(client_id, client_secret, form.get("scope"))
        response = app.response_class(json.dumps(body), mimetype="application/json")
        response.headers["Cache-Control"] = "no-store"
        return response

    # ------------------------------------------------------------ read-only collections

    def record_json(kind: str, record: dict[str, Any]) -> dict[str, Any]:
        return resource(kind, record["id"], store.attributes(kind, record), base_url())

    def listing(kind: str, rows: Iterable[dict[str, Any]], render: Callable[..., Any]) -> Response:
        """Sort, page and render; `links.next` is the only way on, as the contract says."""
        known = {"page", "limit", "sort", "include"}
        for name in request.args:
            if name.startswith("filter[") and name.endswith("]"):
                continue
            if name not in known:
                raise bad_parameter(name, f"unknown query parameter {name!r}")
        page = as_int(request.args.get("page", "1"), "page")
        limit = as_int(request.args.get("limit", str(DEFAULT_LIMIT)), "limit")
        if page < 1:
            raise bad_parameter("page", f"page must be at least 1, got {page}")
        if not 1 <= limit <= MAX_LIMIT:
            raise bad_parameter("limit", f"limit must be between 1 and {MAX_LIMIT}, got {limit}")
        ordered = sort_rows(kind, list(rows))
        offset = (page - 1) * limit
        if page > 1:
            drift = store.fire("page_drift")
            if drift is not None:
                offset = max(0, offset - drift["shift"])
        chunk = ordered[offset : offset + limit]
        total = len(ordered)
        pages = max(1, -(-total // limit))
        data, included = render(chunk)
        body: dict[str, Any] = {"data": data}
        if included is not None:
            body["included"] = included
        body["meta"] = {
            "pagination": {
                "total": total,
                "count": len(chunk),
                "per_page": limit,
                "current_page": page,
                "total_pages": pages,
            }
        }
        body["links"] = {
            "self": page_link(kind, page, limit),
            "first": page_link(kind, 1, limit),
            "prev": page_link(kind, page - 1, limit) if page > 1 else None,
            "next": page_link(kind, page + 1, limit) if page < pages else None,
            "last": page_link(kind, pages, limit),
        }
        return document(body)

    def page_link(kind: str, page: int, limit: int) -> str:
        args = [(k, v) for k, v in request.args.items(multi=True) if k not in ("page", "limit")]
        args += [("page", str(page)), ("limit", str(limit))]
        return f"{base_url()}/{kind}?{urlencode(args)}"

    def sort_rows(kind: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        spec = request.args.get("sort", "id")
        for field in reversed(spec.split(",")):
            name = field.lstrip("-")
            if name not in SORTS or (name == "start" and kind not in ("appointments", "absences")):
                raise bad_parameter("sort", f"cannot sort {kind} by {field!r}")
            rows.sort(key=lambda r, n=name: r[n], reverse=field.startswith("-"))
        return rows

    def filters(kind: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, value in request.args.items():
            if not name.startswith("filter["):
                continue
            key = name[len("filter[") : -1]
            reader = FILTERS[kind].get(key)
            if reader is None:
                raise bad_parameter(name, f"{kind} cannot be filtered by {key!r}")
            out[key] = reader(value, name)
        return out

    def plain(kind: str) -> Callable[[list[dict[str, Any]]], tuple[list[Any], None]]:
        return lambda chunk: ([record_json(kind, r) for r in chunk], None)

    @app.get(f"{API}/users")
    def users() -> Response:
        wanted = filters("users")
        with store.lock:
            rows = [u for u in store.users.values() if user_matches(store, u, wanted)]
            return listing("users", rows, plain("users"))

    @app.get(f"{API}/users/<int:user_id>")
    def user(user_id: int) -> Response:
        with store.lock:
            return document({"data": record_json("users", store.get("users", user_id))})

    @app.patch(f"{API}/users/<int:user_id>")
    def patch_user(user_id: int) -> Response:
        data = request_data("users", user_id)
        assignments = None
        rel = data.get("relationships", {}).get("assignments")
        if rel is not None:
            assignments = relationship_ids(rel, "assignments")
        updated = store.update_user(user_id, data.get("attributes", {}), assignments, if_match())
        with store.lock:
            return document({"data": record_json("users", updated)})

    @app.get(f"{API}/assignments")
    def assignments() -> Response:
        wanted = filters("assignments")
        with store.lock:
            rows = [
                a
                for a in store.assignments.values()
                if "user" not in wanted or a["user_id"] == wanted["user"]
            ]
            return listing("assignments", rows, plain("assignments"))

    for kind in ("locations", "services"):

        def collection(kind: str = kind) -> Response:
            filters(kind)
            with store.lock:
                return listing(kind, list(store.table(kind).values()), plain(kind))

        def single(record_id: int, kind: str = kind) -> Response:
            with store.lock:
                return document({"data": record_json(kind, store.get(kind, record_id))})

        app.add_url_rule(f"{API}/{kind}", f"{kind}_list", collection, methods=["GET"])
        app.add_url_rule(f"{API}/{kind}/<int:record_id>", f"{kind}_one", single, methods=["GET"])

    @app.get(f"{API}/clients/<int:client_id>")
    def client(client_id: int) -> Response:
        with store.lock:
            return document({"data": record_json("clients", store.get("clients", client_id))})

    # ------------------------------------------------------------ appointments

    def includes() -> set[str]:
        raw = request.args.get("include", "")
        asked = {x for x in raw.split(",") if x}
        unknown = asked - INCLUDES["appointments"]
        if unknown:
            raise bad_parameter("include", f"cannot include {sorted(unknown)}")
        return asked

    def appointment_json(appt: dict[str, Any], asked: set[str], included: dict[str, Any]) -> Any:
        rels: dict[str, Any] = {
            "attendees": {
                "data": [{"type": "attendees", "id": str(a["id"])} for a in appt["attendees"]]
            },
            "location": {"data": {"type": "locations", "id": str(appt["location_id"])}},
            "services": {"data": [{"type": "services", "id": str(s)} for s in appt["service_id"]]},
            "users": {
                "data": [
                    {"type": "users", "id": str(u)}
                    for u in [appt["staff_id"], *appt["additional_staff_id"]]
                ]
            },
        }
        if "attendees" in asked:
            for a in appt["attendees"]:
                # Attendees have no URL of their own: they live inside their appointment.
                included[f"attendees:{a['id']}"] = {
                    "type": "attendees",
                    "id": str(a["id"]),
                    "attributes": store.attendee(a),
                }
        if "location" in asked:
            loc = store.locations[appt["location_id"]]
            included[f"locations:{loc['id']}"] = record_json("locations", loc)
        if "services" in asked:
            for s in appt["service_id"]:
                included[f"services:{s}"] = record_json("services", store.services[s])
        if "users" in asked:
            for u in [appt["staff_id"], *appt["additional_staff_id"]]:
                included[f"users:{u}"] = record_json("users", store.users[u])
        return resource(
            "appointments", appt["id"], store.attributes("appointments", appt), base_url(), rels
        )

    def appointment_document(appt: dict[str, Any], status: int = 200) -> Response:
        asked = includes()
        included: dict[str, Any] = {}
        body: dict[str, Any] = {"data": appointment_json(appt, asked, included)}
        if asked:
            body["included"] = list(included.values())
        return document(body, status)

    @app.get(f"{API}/appointments")
    def appointments() -> Response:
        wanted = filters("appointments")
        asked = includes()
        with store.lock:
            rows = [a for a in store.appointments.values() if appointment_matches(a, wanted)]

            def render(chunk: list[dict[str, Any]]) -> tuple[list[Any], list[Any] | None]:
                included: dict[str, Any] = {}
                data = [appointment_json(a, asked, included) for a in chunk]
                return data, list(included.values()) if asked else None

            return listing("appointments", rows, render)

    @app.get(f"{API}/appointments/<int:appointment_id>")
    def appointment(appointment_id: int) -> Response:
        with store.lock:
            return appointment_document(store.get("appointments", appointment_id))

    @app.post(f"{API}/appointments")
    def create_appointment() -> Response:
        data = request_data("appointments", None)
        clients: list[int] = []
        rel = data.get("relationships", {}).get("attendees")
        if rel is not None:
            clients = relationship_ids(rel, "attendees")
        created = store.create_appointment(data.get("attributes", {}), clients)
        with store.lock:
            response = appointment_document(created, 201)
        response.headers["Location"] = f"{base_url()}/appointments/{created['id']}"
        return response

    @app.patch(f"{API}/appointments/<int:appointment_id>")
    def patch_appointment(appointment_id: int) -> Response:
        data = request_data("appointments", appointment_id)
        if "relationships" in data:
            raise ApiError(
                422,
                "validation_failed",
                "Invalid document",
                "relationships cannot be changed here",
                pointer="/data/relationships",
            )
        updated = store.update_appointment(appointment_id, data.get("attributes", {}), if_match())
        with store.lock:
            return appointment_document(updated)

    @app.delete(f"{API}/appointments/<int:appointment_id>/attendees/<int:attendee_id>")
    def cancel_attendee(appointment_id: int, attendee_id: int) -> Response:
        updated = store.cancel_attendee(appointment_id, attendee_id)
        with store.lock:
            return appointment_document(updated)

    # ------------------------------------------------------------ absences

    @app.get(f"{API}/absences")
    def absences() -> Response:
        wanted = filters("absences")
        with store.lock:
            rows = [a for a in store.absences.values() if absence_matches(a, wanted)]
            return listing("absences", rows, plain("absences"))

    @app.get(f"{API}/absences/<int:absence_id>")
    def absence(absence_id: int) -> Response:
        with store.lock:
            return document({"data": record_json("absences", store.get("absences", absence_id))})

    @app.post(f"{API}/absences")
    def create_absence() -> Response:
        data = request_data("absences", None)
        created = store.create_absence(data.get("attributes", {}))
        with store.lock:
            response = document({"data": record_json("absences", created)}, 201)
        response.headers["Location"] = f"{base_url()}/absences/{created['id']}"
        return response

    @app.patch(f"{API}/absences/<int:absence_id>")
    def patch_absence(absence_id: int) -> Response:
        data = request_data("absences", absence_id)
        updated = store.update_absence(absence_id, data.get("attributes", {}), if_match())
        with store.lock:
            return document({"data": record_json("absences", updated)})

    @app.delete(f"{API}/absences/<int:absence_id>")
    def delete_absence(absence_id: int) -> Response:
        store.delete_absence(absence_id, if_match())
        return Response(status=204)

    # ------------------------------------------------------------ webhooks

    def webhook_json(hook: dict[str, Any], *, with_secret: bool = False) -> dict[str, Any]:
        out = record_json("webhooks", hook)
        if with_secret:
            out["attributes"]["secret"] = hook["secret"]
        return out

    @app.get(f"{API}/webhooks")
    def webhooks() -> Response:
        filters("webhooks")
        with store.lock:
            return listing("webhooks", list(store.webhooks.values()), plain("webhooks"))

    @app.post(f"{API}/webhooks")
    def create_webhook() -> Response:
        data = request_data("webhooks", None)
        hook = store.create_webhook(data.get("attributes", {}))
        with store.lock:
            response = document({"data": webhook_json(hook, with_secret=True)}, 201)
        response.headers["Location"] = f"{base_url()}/webhooks/{hook['id']}"
        return response

    @app.get(f"{API}/webhooks/<int:webhook_id>")
    def webhook(webhook_id: int) -> Response:
        with store.lock:
            return document({"data": webhook_json(store.get("webhooks", webhook_id))})

    @app.patch(f"{API}/webhooks/<int:webhook_id>")
    def patch_webhook(webhook_id: int) -> Response:
        data = request_data("webhooks", webhook_id)
        hook = store.update_webhook(webhook_id, data.get("attributes", {}), if_match())
        with store.lock:
            return document({"data": webhook_json(hook)})

    @app.delete(f"{API}/webhooks/<int:webhook_id>")
    def delete_webhook(webhook_id: int) -> Response:
        store.delete_webhook(webhook_id)
        return Response(status=204)

    @app.post(f"{API}/webhooks/<int:webhook_id>/test")
    def ping_webhook(webhook_id: int) -> Response:
        delivery = store.ping(webhook_id)
        with store.lock:
            return document({"data": delivery_resource(delivery)}, 202)

    @app.get(f"{API}/webhooks/<int:webhook_id>/deliveries")
    def webhook_deliveries(webhook_id: int) -> Response:
        with store.lock:
            store.get("webhooks", webhook_id)
            rows = [d for d in store.deliveries.values() if d["webhook_id"] == webhook_id]
            rows.sort(key=lambda d: d["created_at"], reverse=True)
            return document({"data": [delivery_resource(d) for d in rows[:100]]})

    def delivery_resource(delivery: dict[str, Any]) -> dict[str, Any]:
        attrs = delivery_json(delivery)
        attrs.pop("id")
        return {"type": "deliveries", "id": delivery["id"], "attributes": attrs}

    # ------------------------------------------------------------ controls (not Coconut)

    @app.get("/_emulator/state")
    def state() -> Response:
        return document(store.state(base_url()))

    @app.post("/_emulator/faults/<kind>")
    def arm_fault(kind: str) -> Response:
        body = request.get_json(silent=True)
        try:
            trigger = parse_trigger(kind, {} if body is None and not request.data else body)
        except FaultSpecError as exc:
            raise ApiError(400, "invalid_fault", "Invalid fault", str(exc)) from None
        with store.lock:
            store.faults[kind] = trigger
            return document({"fault": kind, **trigger.as_json()}, 201)

    @app.delete("/_emulator/faults")
    def clear_faults() -> Response:
        with store.lock:
            store.faults.clear()
        return Response(status=204)

    @app.post("/_emulator/tokens/expire")
    def expire_tokens() -> Response:
        return document({"expired": store.expire_tokens()})

    @app.patch("/_emulator/settings")
    def patch_settings() -> Response:
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            raise ApiError(400, "invalid_document", "Invalid body", "body must be a JSON object")
        for name, value in body.items():
            spec = SETTINGS_TYPES.get(name)
            if spec is None:
                raise ApiError(
                    400, "invalid_setting", "Invalid setting", f"unknown setting {name!r}"
                )
            types, least = spec
            if (
                isinstance(value, bool)
                or not isinstance(value, types)
                or (value is not None and value < least)
            ):
                raise ApiError(
                    400,
                    "invalid_setting",
                    "Invalid setting",
                    f"bad value for {name}, got {value!r}",
                )
        with store.lock:
            for name, value in body.items():
                setattr(store.settings, name, value)
            return document(store.settings.as_json())

    return app


# ---------------------------------------------------------------- request helpers


def document(body: dict[str, Any], status: int = 200) -> Response:
    return Response(json.dumps(body), status=status, mimetype=JSONAPI)


def bearer_token() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def basic_credentials() -> tuple[str, str] | None:
    """client_secret_basic (RFC 6749 §2.3.1), which OAuth clients may use instead of the form."""
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        client_id, _, secret = base64.b64decode(value).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        raise ApiError(
            400, "invalid_request", "invalid_request", "malformed Basic credentials"
        ) from None
    return client_id, secret


def scope_needed(path: str, method: str) -> str | None:
    """`/webhooks…` needs webhooks:manage; the rest by collection and method."""
    first = path[len(API) + 1 :].split("/", 1)[0]
    if first == "webhooks":
        return "webhooks:manage"
    return SCOPE_FOR.get((first, method))


def if_match() -> int | None:
    """`If-Match: 7` or `If-Match: "7"`; anything else is the client's mistake."""
    raw = request.headers.get("If-Match")
    if raw is None:
        return None
    value = raw.strip().strip('"')
    if not value.isdigit():
        raise ApiError(
            400,
            "invalid_header",
            "Invalid If-Match",
            f"If-Match must be a resource version number, got {raw[:40]!r}",
        )
    return int(value)


def request_data(kind: str, record_id: int | None) -> dict[str, Any]:
    """The `data` member of a JSON:API request body, checked for type and id."""
    mimetype = request.mimetype
    if mimetype not in ("application/json", JSONAPI):
        raise ApiError(
            415,
            "unsupported_media_type",
            "Unsupported media type",
            f"send application/json or {JSONAPI}, got {mimetype or 'nothing'!r}",
        )
    try:
        body = json.loads(request.get_data(cache=True) or b"null")
    except ValueError:
        raise ApiError(
            400, "invalid_json", "Malformed JSON", "the body is not valid JSON"
        ) from None
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, dict):
        raise ApiError(
            400,
            "invalid_document",
            "Invalid document",
            'body must be {"data": {...}}',
            pointer="/data",
        )
    if data.get("type") != kind:
        raise ApiError(
            400,
            "invalid_document",
            "Invalid document",
            f"data.type must be {kind!r}, got {data.get('type')!r}",
            pointer="/data/type",
        )
    if record_id is not None and "id" in data and str(data["id"]) != str(record_id):
        raise ApiError(
            400,
            "invalid_document",
            "Invalid document",
            f"data.id {data['id']!r} does not match the URL's {record_id}",
            pointer="/data/id",
        )
    for member in ("attributes", "relationships"):
        if member in data and not isinstance(data[member], dict):
            raise ApiError(
                400,
                "invalid_document",
                "Invalid document",
                f"data.{member} must be an object",
                pointer=f"/data/{member}",
            )
    return data


def relationship_ids(rel: Any, name: str) -> list[int]:
    pointer = f"/data/relationships/{name}"
    items = rel.get("data") if isinstance(rel, dict) else None
    if not isinstance(items, list):
        raise ApiError(
            422,
            "validation_failed",
            "Invalid relationship",
            f'{name} must be {{"data": [...]}}',
            pointer=pointer,
        )
    ids = []
    for item in items:
        raw = item.get("id") if isinstance(item, dict) else None
        if not (isinstance(raw, int) and not isinstance(raw, bool)) and not (
            isinstance(raw, str) and raw.isdigit()
        ):
            raise ApiError(
                422,
                "validation_failed",
                "Invalid relationship",
                f"{name} items need a numeric id, got {item!r}",
                pointer=pointer,
            )
        ids.append(int(raw))
    return ids


def user_matches(store: Store, user: dict[str, Any], wanted: dict[str, Any]) -> bool:
    if "email" in wanted and user["email"].lower() != wanted["email"].lower():
        return False
    if "active" in wanted and user["active"] != wanted["active"]:
        return False
    if "updated_since" in wanted and user["updated_at"] < wanted["updated_since"]:
        return False
    takes = wanted.get("takes_appointments")
    if takes is not None and store.takes_appointments(user["id"]) != takes:
        return False
    mine = [a for a in store.assignments.values() if a["user_id"] == user["id"]]
    if "location" in wanted and not any(a["location_id"] == wanted["location"] for a in mine):
        return False
    return "service" not in wanted or any(wanted["service"] in a["service_ids"] for a in mine)


def appointment_matches(appt: dict[str, Any], wanted: dict[str, Any]) -> bool:
    staff = [appt["staff_id"], *appt["additional_staff_id"]]
    checks = (
        ("user", lambda v: v in staff),
        ("location", lambda v: appt["location_id"] == v),
        ("status", lambda v: appt["status"] == v),
        ("start_after", lambda v: appt["start"] >= v),
        ("start_before", lambda v: appt["start"] < v),
        ("updated_since", lambda v: appt["updated_at"] >= v),
    )
    return all(test(wanted[name]) for name, test in checks if name in wanted)


def absence_matches(absence: dict[str, Any], wanted: dict[str, Any]) -> bool:
    checks = (
        ("user", lambda v: absence["user_id"] == v),
        ("source", lambda v: absence["source"] == v),
        ("external_id", lambda v: absence.get("external_id") == v),
        ("updated_since", lambda v: absence["updated_at"] >= v),
    )
    return all(test(wanted[name]) for name, test in checks if name in wanted)
