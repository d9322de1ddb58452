"""`/_emulator/...`: not Graph. Inspection, faults and the mailbox owner's own hands.

No auth, JSON in and out. Owner edits (`/_emulator/users/<id>/events`) act as the user in Outlook:
same bodies as Graph, no token, no throttling, and they fire notifications like any change.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from emulators.graph import events as ev
from emulators.graph import faults as fault_specs
from emulators.graph import query
from emulators.graph.auth import Tokens
from emulators.graph.delta import DeltaStates
from emulators.graph.errors import GraphError, bad_request
from emulators.graph.faults import Faults
from emulators.graph.store import Store
from emulators.graph.subscriptions import LIFECYCLE_EVENTS, Subscriptions
from emulators.graph.timeutil import BadTime, utcnow, zone

bp = Blueprint("control", __name__, url_prefix="/_emulator")


def _ext(name: str) -> Any:
    return current_app.extensions[name]


def _store() -> Store:
    return _ext("graph_store")  # type: ignore[no-any-return]


def _subs() -> Subscriptions:
    return _ext("graph_subscriptions")  # type: ignore[no-any-return]


def _json() -> dict[str, Any]:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise bad_request("Expected a JSON object body.")
    return body


@bp.get("/state")
def state() -> Response:
    store, base = _store(), query.base_url()
    pending = _ext("graph_notifier").pending()
    with store.lock:
        users = [u.summary() for u in store.users.values()]
        events = {
            uid: [store.render_event(e, base) for e in sorted(evs.values(), key=lambda e: e.start)]
            for uid, evs in store.events.items()
        }
        counters = {
            **_counters(store),
            "notifications": {**store.counters["notifications"], "pending": pending},
        }
        announcements = {
            uid: {"changed_at": at, "announced_at": store.announced_at.get(uid, 0.0)}
            for uid, at in store.changed_at.items()
        }
        shares = [{"owner": o, "delegate": d, "role": r}
                  for d, owners in store.shares.items() for o, r in owners.items()]  # fmt: skip
    now = utcnow()
    with _subs().lock:
        subscriptions = [
            {**s.render(with_state=True), "mailbox": s.mailbox}
            for s in _subs().items.values()
            if s.expiration > now
        ]
    faults: Faults = _ext("graph_faults")
    return jsonify(
        {"users": users, "events": events, "subscriptions": subscriptions, "shares": shares,
         "faults": faults.describe(), "counters": counters, "announcements": announcements}
    )  # fmt: skip


def _counters(store: Store) -> dict[str, Any]:
    return {
        "delta_rounds": dict(store.counters["delta_rounds"]),
        "requests": dict(store.counters["requests"]),
        "batched": store.counters["batched"],
        "throttled": store.counters["throttled"],
        "notifications": dict(store.counters["notifications"]),
    }


@bp.get("/summary")
def summary() -> Response:
    """The counters and how many events there are, without rendering them: /state renders every
    event, which at tens of thousands of events takes longer than a benchmark should wait."""
    store = _store()
    with store.lock:
        counters = _counters(store)
        total = sum(len(evs) for evs in store.events.values())
        by_property: dict[str, int] = {}
        for evs in store.events.values():
            for event in evs.values():
                for pid, _value in event.ext.values():
                    by_property[pid] = by_property.get(pid, 0) + 1
    return jsonify({"counters": counters, "events": total, "by_extended_property": by_property})


@bp.post("/faults")
def arm_fault() -> Response:
    try:
        fault = fault_specs.parse(request.get_json(silent=True))
    except fault_specs.FaultSpecError as exc:
        raise bad_request(str(exc), "InvalidFault") from exc
    if fault.kind == "expire_delta":
        delta: DeltaStates = _ext("graph_delta")
        target = fault.params.get("mailbox")
        delta.expire([_store().user(target).id] if target else list(_store().users))
    else:
        _ext("graph_faults").arm(fault)
    return jsonify({"armed": {"kind": fault.kind, **fault.params}}), 201  # type: ignore[return-value]


@bp.delete("/faults")
def clear_faults() -> Response:
    _ext("graph_faults").clear()
    return Response(status=204)


@bp.post("/users")
def add_user() -> Response:
    body = _json()
    mail, name, tz = body.get("mail"), body.get("displayName"), body.get("timeZone", "UTC")
    if not isinstance(mail, str) or "@" not in mail:
        raise bad_request(f"mail must be an address, got {mail!r}")
    if not isinstance(tz, str):
        raise bad_request(f"timeZone must be a zone name, got {tz!r}")
    try:
        zone(tz)
    except BadTime as exc:
        raise bad_request(str(exc)) from exc
    user = _store().add_user(mail, name if isinstance(name, str) else mail.split("@")[0], tz)
    return jsonify(user.summary()), 201  # type: ignore[return-value]


@bp.post("/shares")
def add_share() -> Response:
    body = _json()
    role = body.get("role", "write")
    if role not in ("read", "write"):
        raise bad_request(f"role must be read or write, got {role!r}")
    owner, delegate = body.get("owner"), body.get("delegate")
    if not isinstance(owner, str) or not isinstance(delegate, str):
        raise bad_request("owner and delegate must be user ids")
    _store().share(_store().user(owner).id, _store().user(delegate).id, role)
    return jsonify({"owner": owner, "delegate": delegate, "role": role}), 201  # type: ignore[return-value]


def _owner_render(inst: ev.Instance) -> dict[str, Any]:
    return ev.render(inst, "UTC", query.base_url())


@bp.post("/users/<user>/events")
def owner_create(user: str) -> Response:
    event, _ = _store().create_event(_store().user(user).id, _json(), privileged=True)
    return jsonify(_owner_render(ev.master_instance(event))), 201  # type: ignore[return-value]


@bp.get("/users/<user>/calendarView")
def owner_calendar_view(user: str) -> Response:
    """What the owner sees between `startDateTime` and `endDateTime`: every instance in UTC
    with its master's extended properties. For checking a sync's outcome without spending
    (or being throttled on) the app's own Graph requests."""
    start, end = query.window(query.args({"startdatetime", "enddatetime"}))
    store, base = _store(), query.base_url()
    with store.lock:
        uid = store.user(user).id
        rows = []
        for event in store.events.get(uid, {}).values():
            props = [{"id": pid, "value": value} for pid, value in event.ext.values()]
            for inst in ev.instances(event, start, end):
                rows.append(
                    {**ev.render(inst, "UTC", base), "singleValueExtendedProperties": props}
                )
    return jsonify({"value": sorted(rows, key=lambda r: r["start"]["dateTime"])})


@bp.patch("/users/<user>/events/<event_id>")
def owner_update(user: str, event_id: str) -> Response:
    inst = _store().update_event(_store().user(user).id, event_id, _json(), privileged=True)
    return jsonify(_owner_render(inst))


@bp.delete("/users/<user>/events/<event_id>")
def owner_delete(user: str, event_id: str) -> Response:
    _store().delete_event(_store().user(user).id, event_id)
    return Response(status=204)


def _subscription(sub_id: str) -> Any:
    sub = _subs().live(sub_id)
    if sub is None:
        raise GraphError(404, "ResourceNotFound", f"No live subscription {sub_id!r}.")
    return sub


@bp.post("/subscriptions/<sub_id>/expire")
def expire_subscription(sub_id: str) -> Response:
    _subs().remove(_subscription(sub_id).id)
    return Response(status=204)


@bp.post("/subscriptions/<sub_id>/lifecycle")
def lifecycle(sub_id: str) -> Response:
    event = _json().get("event")
    if event not in LIFECYCLE_EVENTS:
        raise bad_request(f"event must be one of {sorted(LIFECYCLE_EVENTS)}, got {event!r}")
    sub = _subscription(sub_id)
    sent = _subs().lifecycle(sub, event)
    if event == "subscriptionRemoved":
        _subs().remove(sub.id)
    return jsonify({"sent": sent, "event": event})


@bp.post("/tokens/expire")
def expire_tokens() -> Response:
    """Every issued access token goes stale now (a token expiring mid-run)."""
    tokens: Tokens = _ext("graph_tokens")
    tokens.expire_all()
    return Response(status=204)


@bp.post("/tokens/revoke")
def revoke_refresh_tokens() -> Response:
    """Refresh tokens stop working, as after "revoke sessions" in Entra: the next redemption
    gets invalid_grant (AADSTS50173)."""
    tokens: Tokens = _ext("graph_tokens")
    return jsonify({"revoked": tokens.revoke_refresh()})  # type: ignore[return-value]
