"""Graph v1.0 as the sync calls it: /users, events CRUD, calendarView and its delta.

Every call passes the same ladder in `guard`: bearer token → request counter → for mailbox
calls: the caller may reach the mailbox (delegated tokens: own and shared calendars) → armed
`forbidden`/`throttle` faults → Exchange's per app + mailbox limits. `/me/...` is the same
route with the token's account as the mailbox.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from typing import Any

from flask import Blueprint, Response, current_app, g, jsonify, request

from emulators.graph import delta as delta_rounds
from emulators.graph import events as ev
from emulators.graph import query
from emulators.graph.auth import bearer
from emulators.graph.errors import GraphError, access_denied, bad_request, error_body
from emulators.graph.faults import Faults
from emulators.graph.odata import apply_select, compile_filter, parse_expand, parse_select
from emulators.graph.store import Store, User
from emulators.graph.throttle import Throttle

bp = Blueprint("graph", __name__, url_prefix="/v1.0")

EVENT_FIELDS = {
    "id", "createdDateTime", "lastModifiedDateTime", "changeKey", "categories", "transactionId",
    "originalStartTimeZone", "originalEndTimeZone", "iCalUId", "uid", "reminderMinutesBeforeStart",
    "isReminderOn", "hasAttachments", "subject", "bodyPreview", "importance", "sensitivity",
    "isAllDay", "isCancelled", "isOrganizer", "responseRequested", "seriesMasterId", "showAs",
    "type", "webLink", "onlineMeetingUrl", "isOnlineMeeting", "onlineMeetingProvider",
    "allowNewTimeProposals", "isDraft", "hideAttendees", "responseStatus", "body", "start", "end",
    "location", "locations", "recurrence", "attendees", "organizer", "onlineMeeting",
    "originalStart", "singleValueExtendedProperties",
}  # fmt: skip
USER_FIELDS = {
    "id", "businessPhones", "displayName", "givenName", "jobTitle", "mail", "mobilePhone",
    "officeLocation", "preferredLanguage", "surname", "userPrincipalName",
}  # fmt: skip
LIST_OPTIONS = {"$top", "$skip", "$select", "$filter", "$expand", "$orderby", "$count"}
WRITE_METHODS = {"POST", "PATCH", "PUT", "DELETE"}


def store() -> Store:
    return current_app.extensions["graph_store"]  # type: ignore[no-any-return]


def faults() -> Faults:
    return current_app.extensions["graph_faults"]  # type: ignore[no-any-return]


def throttle() -> Throttle:
    return current_app.extensions["graph_throttle"]  # type: ignore[no-any-return]


# -- the guard ladder -------------------------------------------------------------------------
@bp.before_request
def guard() -> None:
    token = bearer()
    g.token = token
    rule = request.url_rule.rule if request.url_rule else request.path
    store().count_request(f"{request.method} {rule}")
    key = (request.view_args or {}).get("user")
    mailbox = _mailbox(key) if key is not None else None
    g.mailbox = mailbox
    fault = faults().take("throttle", mailbox.id if mailbox else None, request.method)
    if fault is not None:
        status = fault.params.get("status", 429)
        with store().lock:
            store().counters["throttled"] += 1
        code = "ApplicationThrottled" if status == 429 else "ServiceUnavailable"
        message = (
            "Application is over its MailboxConcurrency limit."
            if status == 429
            else "The service is temporarily unavailable. Please retry later."
        )
        raise GraphError(
            status, code, message, {"Retry-After": str(fault.params.get("retry_after", 2))}
        )
    if request.method != "GET":
        slow = faults().take("slow_response", mailbox.id if mailbox else None)
        g.slow_response = slow.params["seconds"] if slow is not None else 0
    if mailbox is not None:
        try:
            throttle().acquire(token.client_id, mailbox.id)
        except GraphError:
            with store().lock:
                store().counters["throttled"] += 1
            raise
        g.throttle_key = (token.client_id, mailbox.id)
        latency = store().settings.latency
        if latency:
            time.sleep(latency)


@bp.after_request
def answer_late(response: Response) -> Response:
    if g.get("slow_response"):
        time.sleep(g.slow_response)
    return response


@bp.after_request
def fail_after_write(response: Response) -> Response:
    """An armed `fail_after_write` fault: the write went through, its answer is a 5xx."""
    if request.method == "GET" or response.status_code >= 300:
        return response
    mailbox = g.get("mailbox")
    fault = faults().take("fail_after_write", mailbox.id if mailbox else None, request.method)
    if fault is None:
        return response
    status = fault.params.get("status", 503)
    code = {500: "InternalServerError", 502: "BadGateway", 504: "GatewayTimeout"}.get(
        status, "ServiceUnavailable"
    )
    failed = jsonify(
        error_body(code, "The service is temporarily unavailable. Please retry later.")
    )
    failed.status_code = status
    return failed


@bp.teardown_request
def release(_exc: BaseException | None) -> None:
    key = g.pop("throttle_key", None)
    if key is not None:
        throttle().release(*key)


def _mailbox(key: str) -> User:
    """The mailbox a call is about, if the caller may reach it."""
    token = g.token
    if key == "me":
        if not token.delegated:
            raise bad_request(
                "/me request is only valid with delegated authentication flow.", "BadRequest"
            )
        key = token.user_id
    user = store().user(key)
    if token.delegated and user.id != token.user_id:
        role = store().shared_with(token.user_id).get(user.id)
        if role is None or (request.method in WRITE_METHODS and role == "read"):
            raise access_denied()
    for fault in faults().standing("forbidden"):
        if fault.params.get("mailbox") == user.id:
            raise access_denied()
    return user


def mailbox_routes(path: str, methods: list[str]) -> Callable[[Callable[..., Any]], Any]:
    """Registers a view under /users/<user>/path and /me/path."""

    def register(view: Callable[..., Any]) -> Callable[..., Any]:
        name = view.__name__
        bp.add_url_rule(f"/users/<user>{path}", name, view, methods=methods)
        bp.add_url_rule(f"/me{path}", f"{name}_me", view, methods=methods,
                        defaults={"user": "me"})  # fmt: skip
        return view

    return register


# -- users ------------------------------------------------------------------------------------
@bp.get("/users")
def list_users() -> Response:
    q = query.args({"$top", "$select", "$filter", "$skiptoken", "$count", "$orderby"})
    select = parse_select(q.get("$select"), USER_FIELDS, "user")
    rows = [u.render() for u in store().user_list()]
    if "$filter" in q:
        keep = compile_filter(q["$filter"], "Request_UnsupportedQuery")
        rows = [r for r in rows if keep(r)]
    top = query.integer(q, "$top", 100, 1, 999)
    offset = 0
    if "$skiptoken" in q:
        try:
            offset = int(base64.urlsafe_b64decode(q["$skiptoken"].encode()).decode())
        except ValueError:
            raise bad_request("Invalid $skiptoken.", "Request_BadRequest") from None
    body: dict[str, Any] = {
        "@odata.context": f"{query.base_url()}/v1.0/$metadata#users",
        "value": [apply_select(r, select) for r in rows[offset : offset + top]],
    }
    if offset + top < len(rows):
        params = {k: v for k, v in request.args.items() if k.lower() != "$skiptoken"}
        params["$skiptoken"] = base64.urlsafe_b64encode(str(offset + top).encode()).decode()
        body["@odata.nextLink"] = query.link(request.path, params)
    return jsonify(body)


@mailbox_routes("", ["GET"])
def get_user(user: str) -> Response:
    q = query.args({"$select"})
    select = parse_select(q.get("$select"), USER_FIELDS, "user")
    return jsonify(apply_select(g.mailbox.render(), select))


@mailbox_routes("/mailboxSettings", ["GET"])
def mailbox_settings(user: str) -> Response:
    query.args({"$select"})
    return jsonify({"timeZone": g.mailbox.time_zone, "dateFormat": "yyyy-MM-dd",
                    "timeFormat": "HH:mm", "language": {"locale": "en-US"}})  # fmt: skip


def calendar_id(user: User) -> str:
    return "AAMkAGI2" + base64.urlsafe_b64encode(user.id.encode()).decode().rstrip("=")


def _calendar_json(owner: User) -> dict[str, Any]:
    return {
        "id": calendar_id(owner), "name": "Calendar", "color": "auto", "isDefaultCalendar": True,
        "changeKey": "fJKVL07sbkmIfHqjbDnRgQAAAAACGA==", "canShare": True, "canEdit": True,
        "canViewPrivateItems": True, "owner": {"name": owner.display_name, "address": owner.upn},
    }  # fmt: skip


@mailbox_routes("/calendar", ["GET"])
def get_calendar(user: str) -> Response:
    query.args({"$select"})
    return jsonify(_calendar_json(g.mailbox))


@mailbox_routes("/calendars", ["GET"])
def list_calendars(user: str) -> Response:
    """Only the primary calendar: the sync works on it alone (research/graph.md §1, §5)."""
    query.args({"$select", "$top"})
    return jsonify({"value": [_calendar_json(g.mailbox)]})


# -- events -------------------------------------------------------------------------------------
def _calendar(calendar: str | None) -> None:
    if calendar is not None and calendar != calendar_id(g.mailbox):
        raise GraphError(
            404, "ErrorItemNotFound", "The specified object was not found in the store."
        )


def _rows(
    instances: list[ev.Instance], q: dict[str, str], stingy: bool = False
) -> list[dict[str, Any]]:
    """Rendered rows after $filter/$orderby, with $select and $expand applied."""
    tz, body_type, base = query.time_zone(), query.body_type(), query.base_url()
    select = parse_select(q.get("$select"), EVENT_FIELDS, "event")
    expand = parse_expand(q.get("$expand"))
    keep = compile_filter(q["$filter"]) if "$filter" in q else None
    rows = []
    for inst in instances:
        row = ev.render(inst, tz, base, body_type, stingy)
        every = [{"id": pid, "value": value} for pid, value in inst.event.ext.values()]
        if keep is not None and not keep({**row, "singleValueExtendedProperties": every}):
            continue
        if expand is not None:
            row["singleValueExtendedProperties"] = [
                p for p in every if expand({"id": p["id"], "value": p["value"]})
            ]
        rows.append(
            apply_select(
                row, [*select, "singleValueExtendedProperties"] if select and expand else select
            )
        )
    return _order(rows, q.get("$orderby"))


_ORDER_KEYS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "start/datetime": lambda r: r.get("start", {}).get("dateTime", ""),
    "end/datetime": lambda r: r.get("end", {}).get("dateTime", ""),
    "lastmodifieddatetime": lambda r: r.get("lastModifiedDateTime", ""),
    "createddatetime": lambda r: r.get("createdDateTime", ""),
    "subject": lambda r: r.get("subject", ""),
}


def _order(rows: list[dict[str, Any]], orderby: str | None) -> list[dict[str, Any]]:
    if not orderby:
        return rows
    for clause in reversed([c.strip() for c in orderby.split(",")]):
        field, _, direction = clause.partition(" ")
        key = _ORDER_KEYS.get(field.lower())
        if key is None or direction.strip().lower() not in ("", "asc", "desc"):
            raise bad_request(f"The $orderby clause '{clause}' is not supported.")
        rows.sort(key=key, reverse=direction.strip().lower() == "desc")
    return rows


def _json_body() -> dict[str, Any]:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise bad_request("Empty Payload. JSON content expected.", "BadRequest")
    return body


def _entity_context() -> str:
    return f"{query.base_url()}/v1.0/$metadata#users('{g.mailbox.id}')/events/$entity"


def _event_response(inst: ev.Instance, status: int = 200) -> Response:
    row = ev.render(inst, query.time_zone(), query.base_url(), query.body_type())
    row = {"@odata.context": _entity_context(), **row}
    response = jsonify(row)
    response.status_code = status
    response.headers["ETag"] = ev.etag(row["changeKey"])
    return response


EVENT_COLLECTIONS = ["/events", "/calendar/events", "/calendars/<calendar>/events"]


def collection_routes(suffix: str, methods: list[str]) -> Callable[[Callable[..., Any]], Any]:
    """Registers a view for every event collection path under a mailbox."""

    def register(view: Callable[..., Any]) -> Callable[..., Any]:
        for index, path in enumerate(EVENT_COLLECTIONS):
            bp.add_url_rule(f"/users/<user>{path}{suffix}", f"{view.__name__}_{index}", view,
                            methods=methods)  # fmt: skip
            bp.add_url_rule(f"/me{path}{suffix}", f"{view.__name__}_{index}_me", view,
                            methods=methods, defaults={"user": "me"})  # fmt: skip
        return view

    return register


@collection_routes("", ["GET"])
def list_events(user: str, calendar: str | None = None) -> Response:
    _calendar(calendar)
    q = query.args(LIST_OPTIONS)
    with store().lock:
        events = sorted(store().events[g.mailbox.id].values(), key=lambda e: (e.start, e.id))
        rows = _rows([ev.master_instance(e) for e in events], q)
    return jsonify(query.page(rows, q, 10, 1000))


@collection_routes("", ["POST"])
def create_event(user: str, calendar: str | None = None) -> Response:
    _calendar(calendar)
    query.args(set())
    first = any(
        f.params.get("mailbox") in (None, g.mailbox.id)
        for f in faults().standing("transaction_returns_first")
    )
    event, _created = store().create_event(g.mailbox.id, _json_body(), return_first=first)
    return _event_response(ev.master_instance(event), 201)


@collection_routes("/<event_id>", ["GET"])
def get_event(user: str, event_id: str, calendar: str | None = None) -> Response:
    _calendar(calendar)
    q = query.args({"$select", "$expand"})
    with store().lock:
        inst = store().instance(g.mailbox.id, event_id)
        row = _rows([inst], q)[0]
    row = {"@odata.context": _entity_context(), **row}
    response = jsonify(row)
    response.headers["ETag"] = ev.etag(
        inst.override.change_key if inst.override else inst.event.change_key
    )
    return response


@collection_routes("/<event_id>", ["PATCH"])
def update_event(user: str, event_id: str, calendar: str | None = None) -> Response:
    _calendar(calendar)
    query.args(set())
    inst = store().update_event(g.mailbox.id, event_id, _json_body())
    return _event_response(inst)


@collection_routes("/<event_id>", ["DELETE"])
def delete_event(user: str, event_id: str, calendar: str | None = None) -> Response:
    _calendar(calendar)
    query.args(set())
    store().delete_event(g.mailbox.id, event_id)
    return Response(status=204)


@collection_routes("/<event_id>/instances", ["GET"])
def event_instances(user: str, event_id: str, calendar: str | None = None) -> Response:
    _calendar(calendar)
    q = query.args(LIST_OPTIONS | {"startdatetime", "enddatetime"})
    start, end = query.window(q)
    with store().lock:
        event, day = store().resolve(g.mailbox.id, event_id)
        if day is not None:
            raise bad_request("instances is only valid on a series master.", "ErrorInvalidRequest")
        rows = _rows(ev.instances(event, start, end), q)
    return jsonify(query.page(rows, q, 10, 1000))


@mailbox_routes("/calendarView", ["GET"])
def calendar_view(user: str) -> Response:
    q = query.args(LIST_OPTIONS | {"startdatetime", "enddatetime"})
    start, end = query.window(q)
    with store().lock:
        found = [
            inst
            for event in store().events[g.mailbox.id].values()
            for inst in ev.instances(event, start, end)
        ]
        found.sort(key=lambda i: (i.start, i.id))
        rows = _rows(found, q)
    return jsonify(query.page(rows, q, 10, 1000))


@mailbox_routes("/calendarView/delta", ["GET"])
def calendar_view_delta(user: str) -> Response:
    return delta_rounds.answer(store(), g.mailbox)


bp.add_url_rule("/users/<user>/calendarView/delta()", "calendar_view_delta_fn",
                calendar_view_delta, methods=["GET"])  # fmt: skip
bp.add_url_rule("/me/calendarView/delta()", "calendar_view_delta_fn_me", calendar_view_delta,
                methods=["GET"], defaults={"user": "me"})  # fmt: skip
