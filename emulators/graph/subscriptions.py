"""Outlook event subscriptions: create with the validation handshake, list, get, renew,
reauthorize, delete, expiry, and the notifications sent for each change.

Rules (research/graph.md §1-§4): the handshake POSTs `?validationToken=` to notificationUrl and
lifecycleNotificationUrl and needs a 200 text/plain echo of the decoded token within 10 s, else
400; expiry under 45 minutes is raised to 45, more than 10,070 minutes is refused (live Graph
refuses 10,080); `clientState` is never returned by GET; 1,000 subscriptions per mailbox.

As Graph does (research/graph-reality.md item 3 and 5): a second subscription of one app with the
resource and changeType of a live one is refused with 409 Conflict (unless the
`allow_duplicate_subscriptions` switch is on); `GET /subscriptions` is paged by
`@odata.nextLink` (PAGE_SIZE, or a `subscription_page` switch's `size`); notifications write
`subscriptionExpirationDateTime` with seven fractional digits and `Z`. Lifecycle notifications
come on Graph's cadence when switched on (faults, standing until cleared):
`reauthorization_required` sends `reauthorizationRequired` to each subscription `every` seconds
after it was last authorized (created, reauthorized or renewed) or last told, until it is;
`subscription_removed` removes one live subscription every `every` seconds, with its
`subscriptionRemoved`; `missed` answers notifications the emulator gave up on (dropped by a
fault or a slow endpoint, or out of retries) with one `missed` per subscription (at most one a
second). Each may name a `mailbox`.
"""

from __future__ import annotations

import base64
import binascii
import random
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
from flask import Response, current_app, g, jsonify, request

from emulators.graph import query
from emulators.graph.api import bp, faults, store
from emulators.graph.errors import GraphError, access_denied, bad_request
from emulators.graph.notify import Notifier
from emulators.graph.store import Store
from emulators.graph.timeutil import BadTime, format_utc, parse_instant, utcnow

MAX_MINUTES = 10_070
MIN_MINUTES = 45
PER_MAILBOX = 1000
HANDSHAKE_TIMEOUT = 10.0
CHANGE_TYPES = {"created", "updated", "deleted"}
_RESOURCE = re.compile(
    r"^/?(?:users/(?P<user>[^/]+)|me)/(?:events|calendar/events|calendars/[^/]+/events)/?$",
    re.IGNORECASE,
)
_WRITABLE = {
    "changeType", "notificationUrl", "lifecycleNotificationUrl", "resource",
    "expirationDateTime", "clientState", "latestSupportedTlsVersion", "includeResourceData",
    "notificationUrlAppId", "@odata.type",
}  # fmt: skip
LIFECYCLE_EVENTS = {"reauthorizationRequired", "subscriptionRemoved", "missed"}
PAGE_SIZE = 100
MISSED_GAP = 1.0  # seconds: at most one `missed` a second per subscription


@dataclass
class Subscription:
    id: str
    resource: str
    mailbox: str
    change_type: str
    notification_url: str
    lifecycle_url: str | None
    expiration: datetime
    client_state: str | None
    application_id: str
    creator_id: str
    tls: str
    # time.monotonic() of the last authorization (create, reauthorize, renew), of the last
    # reauthorizationRequired sent, and of the last `missed` sent.
    authorized_at: float = field(default_factory=time.monotonic)
    told_at: float = 0.0
    missed_at: float = float("-inf")

    def target(self) -> tuple[str, str, str, frozenset[str]]:
        """What Graph's duplicate rule compares: app, mailbox, resource and changeType."""
        return (self.application_id, self.mailbox, _resource_tail(self.resource),
                frozenset(self.change_type.split(",")))  # fmt: skip

    def render(self, with_state: bool) -> dict[str, Any]:
        return {
            "@odata.type": "#microsoft.graph.subscription",
            "id": self.id,
            "resource": self.resource,
            "applicationId": self.application_id,
            "changeType": self.change_type,
            "clientState": self.client_state if with_state else None,
            "notificationUrl": self.notification_url,
            "notificationQueryOptions": None,
            "lifecycleNotificationUrl": self.lifecycle_url,
            "expirationDateTime": format_utc(self.expiration),
            "creatorId": self.creator_id,
            "includeResourceData": False,
            "latestSupportedTlsVersion": self.tls,
            "encryptionCertificate": None,
            "encryptionCertificateId": None,
            "notificationUrlAppId": None,
        }


class Subscriptions:
    """The subscription table and what it sends; thread-safe."""

    def __init__(self, store: Store, notifier: Notifier, verify: Any = True) -> None:
        self.store = store
        self.notifier = notifier
        self.faults = notifier.faults
        self.lock = threading.Lock()
        self.items: dict[str, Subscription] = {}
        self.verify = verify
        self._removal_clock: dict[int, float] = {}  # id(switch) -> when it last removed one
        store.listeners.append(self.on_change)
        notifier.tick = self.sweep
        notifier.on_drop = self.dropped

    def live(self, sub_id: str) -> Subscription | None:
        with self.lock:
            sub = self.items.get(sub_id)
            if sub is not None and sub.expiration <= utcnow():
                del self.items[sub_id]
                return None
            return sub

    def sweep(self) -> None:
        """Graph deletes expired subscriptions; nothing is sent for them any more. Then the
        lifecycle notifications that are due on the switched-on cadence."""
        now = utcnow()
        with self.lock:
            for sub_id in [s.id for s in self.items.values() if s.expiration <= now]:
                del self.items[sub_id]
        self._reauthorizations()
        self._removals()

    def _reauthorizations(self) -> None:
        switches = self.faults.standing("reauthorization_required")
        if not switches:
            return
        now, due = time.monotonic(), []
        with self.lock:
            for sub in self.items.values():
                for switch in switches:
                    if switch.params.get("mailbox") not in (None, sub.mailbox):
                        continue
                    if now - max(sub.authorized_at, sub.told_at) >= float(switch.params["every"]):
                        sub.told_at = now
                        due.append(sub)
                        break
        for sub in due:
            self.lifecycle(sub, "reauthorizationRequired")

    def _removals(self) -> None:
        switches = self.faults.standing("subscription_removed")
        now = time.monotonic()
        self._removal_clock = {id(s): self._removal_clock.get(id(s), now) for s in switches}
        for switch in switches:
            if now - self._removal_clock[id(switch)] < float(switch.params["every"]):
                continue
            self._removal_clock[id(switch)] = now
            with self.lock:
                live = [s for s in self.items.values() if s.expiration > utcnow()
                        and switch.params.get("mailbox") in (None, s.mailbox)]  # fmt: skip
                if not live:
                    continue
                sub = self.items.pop(random.choice(live).id)
            self.lifecycle(sub, "subscriptionRemoved")

    def dropped(self, payload: dict[str, Any], mailbox: str | None) -> None:
        """Change notifications the emulator gave up on: with the `missed` switch on, their
        subscriptions are told (lifecycle notifications given up on are not)."""
        switches = self.faults.standing("missed")
        if not any(f.params.get("mailbox") in (None, mailbox) for f in switches):
            return
        ids = {n.get("subscriptionId") for n in payload.get("value") or ()
               if isinstance(n, dict) and "lifecycleEvent" not in n}  # fmt: skip
        now, due = time.monotonic(), []
        with self.lock:
            for sub_id in ids:
                sub = self.items.get(sub_id) if isinstance(sub_id, str) else None
                if sub is not None and now - sub.missed_at >= MISSED_GAP:
                    sub.missed_at = now
                    due.append(sub)
        for sub in due:  # the answer to a fault is not the fault's to drop again
            self.lifecycle(sub, "missed", faulted=False)

    def remove(self, sub_id: str) -> Subscription | None:
        with self.lock:
            return self.items.pop(sub_id, None)

    def on_change(self, mailbox: str, event_id: str, change: str) -> None:
        """Queues a change notification for every live subscription watching the mailbox.
        Outlook often follows a `created` with an `updated` for the same event: so do we."""
        changes = [change, "updated"] if change == "created" else [change]
        now = utcnow()
        with self.lock:
            subs = [s for s in self.items.values() if s.mailbox == mailbox and s.expiration > now]
        for sub in subs:
            for kind in changes:
                if kind in sub.change_type.split(","):
                    self.notifier.send(
                        sub.notification_url, self._change(sub, event_id, kind), mailbox
                    )

    def _change(self, sub: Subscription, event_id: str, kind: str) -> dict[str, Any]:
        resource = f"Users/{sub.mailbox}/Events/{event_id}"
        with self.store.lock:
            event = self.store.events.get(sub.mailbox, {}).get(event_id)
            etag = f'W/"{event.change_key}"' if event is not None else None
        data = {"@odata.type": "#Microsoft.Graph.Event", "@odata.id": resource, "id": event_id}
        if etag:
            data["@odata.etag"] = etag
        return {"value": [{
            "subscriptionId": sub.id,
            "subscriptionExpirationDateTime": format_utc(sub.expiration),
            "changeType": kind,
            "resource": resource,
            "resourceData": data,
            "clientState": sub.client_state,
            "tenantId": self.store.settings.tenant,
        }]}  # fmt: skip

    def lifecycle(self, sub: Subscription, event: str, *, faulted: bool = True) -> bool:
        """Sends a lifecycle notification; False when the subscription has no lifecycle URL.
        `faulted`: the notification faults may drop, duplicate or delay it."""
        if sub.lifecycle_url is None:
            return False
        payload = {"value": [{
            "subscriptionId": sub.id,
            "subscriptionExpirationDateTime": format_utc(sub.expiration),
            "tenantId": self.store.settings.tenant,
            "clientState": sub.client_state,
            "lifecycleEvent": event,
        }]}  # fmt: skip
        self.notifier.send(
            sub.lifecycle_url, payload, sub.mailbox, announces=False, faulted=faulted
        )
        return True

    def handshake(self, url: str) -> bool:
        """Graph's validation request: the endpoint must echo the decoded token as text/plain."""
        token = f"Validation: Testing client application reachability for subscription " \
                f"Request-Id: {uuid.uuid4()}"  # fmt: skip
        try:
            with httpx.Client(timeout=HANDSHAKE_TIMEOUT, verify=self.verify) as client:
                response = client.post(
                    url, params={"validationToken": token}, content=b"",
                    headers={"Content-Type": "text/plain; charset=utf-8"},
                )  # fmt: skip
        except httpx.HTTPError:
            return False
        content_type = response.headers.get("Content-Type", "")
        return (
            response.status_code == 200
            and content_type.split(";")[0].strip().lower() == "text/plain"
            and response.text == token
        )


def subs() -> Subscriptions:
    return current_app.extensions["graph_subscriptions"]  # type: ignore[no-any-return]


def _url(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise bad_request(f"'{name}' must be a string.", "InvalidRequest")
    parts = urlsplit(value)
    allowed = {"127.0.0.1", "localhost", "::1"} | store().settings.http_hosts
    if parts.scheme != "https" and not (parts.scheme == "http" and parts.hostname in allowed):
        raise bad_request(
            f"The Notification Url '{name}' must use HTTPS (the emulator allows plain http to "
            "loopback and --allow-http hosts).",
            "InvalidRequest",
        )
    return value


def _expiry(value: Any) -> datetime:
    if not isinstance(value, str):
        raise bad_request("expirationDateTime is required.", "InvalidRequest")
    try:
        when = parse_instant(value)
    except BadTime as exc:
        raise bad_request(str(exc), "InvalidRequest") from exc
    now = utcnow()
    if when > now + timedelta(minutes=MAX_MINUTES):
        raise bad_request(
            f"Subscription expiration can only be {MAX_MINUTES} minutes in the future.",
            "ExtensionError",
        )
    return max(when, now + timedelta(minutes=MIN_MINUTES))


def _resource_tail(resource: str) -> str:
    """The resource past its mailbox (`events`, `calendar/events`...), in lower case: `me/...`,
    `users/{id}/...` and `users/{upn}/...` name one mailbox's one resource."""
    parts = resource.strip("/").lower().split("/")
    return "/".join(parts[2:] if parts[0] == "users" else parts[1:])


def _duplicate(sub: Subscription) -> GraphError | None:
    """Graph's rule: one subscription per app, resource and changeType. The 409's wording is
    the Graph documentation's ("Subscription Id ... already exists for the requested
    combination"), wrapped as Outlook's subscription store wraps its refusals."""
    if faults().standing("allow_duplicate_subscriptions"):
        return None
    target = sub.target()
    now = utcnow()
    found = next((s for s in subs().items.values() if s.expiration > now
                  and s.target() == target), None)  # fmt: skip
    if found is None:
        return None
    return GraphError(
        409, "ExtensionError",
        f"Operation: Create; Exception: [Status Code: Conflict; Reason: Subscription Id "
        f"{found.id} already exists for the requested combination]",
    )  # fmt: skip


def _sub_not_found() -> GraphError:
    return GraphError(404, "ResourceNotFound", "The object was not found.")


def _owned(sub_id: str) -> Subscription:
    sub = subs().live(sub_id)
    if sub is None or sub.application_id != g.token.client_id:
        raise _sub_not_found()
    if g.token.delegated and sub.mailbox != g.token.user_id:
        raise _sub_not_found()
    return sub


def _body() -> dict[str, Any]:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise bad_request("Empty Payload. JSON content expected.", "BadRequest")
    unknown = set(body) - _WRITABLE
    if unknown:
        raise bad_request(
            f"The property '{sorted(unknown)[0]}' does not exist on type "
            "'microsoft.graph.subscription'.",
            "BadRequest",
        )
    return body


@bp.post("/subscriptions")
def create_subscription() -> Response:
    query.args(set())
    body = _body()
    for name in ("changeType", "notificationUrl", "resource", "expirationDateTime"):
        if body.get(name) in (None, ""):
            raise bad_request(f"Subscription property '{name}' is required.", "InvalidRequest")
    change_type = body["changeType"]
    kinds = change_type.split(",") if isinstance(change_type, str) else []
    if not kinds or any(k not in CHANGE_TYPES for k in kinds) or len(set(kinds)) != len(kinds):
        raise bad_request(f"Invalid changeType {change_type!r}.", "InvalidRequest")
    client_state = body.get("clientState")
    if client_state is not None and (not isinstance(client_state, str) or len(client_state) > 128):
        raise bad_request(
            "clientState must be a string of at most 128 characters.", "InvalidRequest"
        )
    if body.get("includeResourceData"):
        raise bad_request(
            "Rich notifications (includeResourceData) are not emulated.", "InvalidRequest"
        )
    resource = body["resource"]
    match = _RESOURCE.match(resource) if isinstance(resource, str) else None
    if match is None:
        raise bad_request(
            f"The value '{resource}' of parameter 'Resource' is not supported.", "ExtensionError"
        )
    token = g.token
    key = match.group("user") or "me"
    if key == "me":
        if not token.delegated:
            raise bad_request("/me request is only valid with delegated authentication flow.")
        key = token.user_id
    mailbox = store().user(key)
    if token.delegated and mailbox.id != token.user_id:
        raise access_denied()
    if any(f.params.get("mailbox") == mailbox.id for f in faults().standing("forbidden")):
        raise access_denied()
    notification_url = _url(body["notificationUrl"], "notificationUrl")
    lifecycle = body.get("lifecycleNotificationUrl")
    lifecycle_url = _url(lifecycle, "lifecycleNotificationUrl") if lifecycle is not None else None
    expiration = _expiry(body["expirationDateTime"])
    tls = body.get("latestSupportedTlsVersion", "v1_2")
    if tls not in ("v1_0", "v1_1", "v1_2", "v1_3"):
        raise bad_request(f"Invalid latestSupportedTlsVersion {tls!r}.", "InvalidRequest")
    with subs().lock:
        count = sum(1 for s in subs().items.values() if s.mailbox == mailbox.id)
    if count >= PER_MAILBOX:
        raise GraphError(403, "ExtensionError", f"The mailbox has reached its limit of "
                         f"{PER_MAILBOX} subscriptions.")  # fmt: skip
    for url in filter(None, (notification_url, lifecycle_url)):
        if not subs().handshake(url):
            raise bad_request(
                "Subscription validation request failed. Notification endpoint must respond "
                "with 200 OK to validation request.",
                "InvalidRequest",
            )
    sub = Subscription(
        id=str(uuid.uuid4()),
        resource=resource,
        mailbox=mailbox.id,
        change_type=change_type,
        notification_url=notification_url,
        lifecycle_url=lifecycle_url,
        expiration=expiration,
        client_state=client_state,
        application_id=token.client_id,
        creator_id=token.user_id or token.client_id,
        tls=tls,
    )
    with subs().lock:
        conflict = _duplicate(sub)
        if conflict is not None:
            raise conflict
        subs().items[sub.id] = sub
    context = f"{query.base_url()}/v1.0/$metadata#subscriptions/$entity"
    response = jsonify({"@odata.context": context, **sub.render(with_state=True)})
    response.status_code = 201
    return response


@bp.get("/subscriptions")
def list_subscriptions() -> Response:
    """The app's live subscriptions by id, a page at a time; `$skiptoken` (opaque to clients)
    names the last id of the page before, so a subscription deleted meanwhile skips none."""
    after = _skiptoken(query.args({"$skiptoken"}).get("$skiptoken"))
    switch = faults().standing("subscription_page")
    size = int(switch[0].params.get("size", PAGE_SIZE)) if switch else PAGE_SIZE
    token = g.token
    with subs().lock:
        found = sorted((s for s in subs().items.values() if s.expiration > utcnow()
                        and s.application_id == token.client_id
                        and (not token.delegated or s.mailbox == token.user_id)
                        and s.id > after), key=lambda s: s.id)  # fmt: skip
    body: dict[str, Any] = {
        "@odata.context": f"{query.base_url()}/v1.0/$metadata#subscriptions",
        "value": [s.render(with_state=False) for s in found[:size]],
    }
    if len(found) > size:
        last = base64.urlsafe_b64encode(found[size - 1].id.encode()).decode()
        body["@odata.nextLink"] = query.link("/v1.0/subscriptions", {"$skiptoken": last})
    return jsonify(body)


def _skiptoken(value: str | None) -> str:
    if value is None:
        return ""
    try:
        return base64.b64decode(value.encode(), altchars=b"-_", validate=True).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise bad_request(f"Invalid $skiptoken {value!r}.", "BadRequest") from None


@bp.get("/subscriptions/<sub_id>")
def get_subscription(sub_id: str) -> Response:
    query.args(set())
    return jsonify(_owned(sub_id).render(with_state=False))


@bp.patch("/subscriptions/<sub_id>")
def renew_subscription(sub_id: str) -> Response:
    query.args(set())
    body = _body()
    sub = _owned(sub_id)
    if "expirationDateTime" not in body and "notificationUrl" not in body:
        raise bad_request(
            "Subscription must contain either the 'expirationDateTime' or 'notificationUrl' "
            "property and its value.",
            "InvalidRequest",
        )
    if "lifecycleNotificationUrl" in body and body["lifecycleNotificationUrl"] != sub.lifecycle_url:
        raise bad_request("lifecycleNotificationUrl cannot be changed; delete and recreate.",
                          "InvalidRequest")  # fmt: skip
    for name in set(body) - {"expirationDateTime", "notificationUrl", "lifecycleNotificationUrl",
                             "@odata.type"}:  # fmt: skip
        raise bad_request(f"Property '{name}' cannot be updated.", "InvalidRequest")
    expiration = _expiry(body["expirationDateTime"]) if "expirationDateTime" in body else None
    url = _url(body["notificationUrl"], "notificationUrl") if "notificationUrl" in body else None
    if url is not None and url != sub.notification_url and not subs().handshake(url):
        raise bad_request(
            "Subscription validation request failed. Notification endpoint must respond with "
            "200 OK to validation request.",
            "InvalidRequest",
        )
    with subs().lock:
        if expiration is not None:
            sub.expiration = expiration
        if url is not None:
            sub.notification_url = url
        sub.authorized_at = time.monotonic()  # renewing reauthorizes too
    return jsonify(sub.render(with_state=False))


@bp.post("/subscriptions/<sub_id>/reauthorize")
def reauthorize_subscription(sub_id: str) -> Response:
    query.args(set())
    sub = _owned(sub_id)
    with subs().lock:
        sub.authorized_at = time.monotonic()
    return Response(status=204)


@bp.delete("/subscriptions/<sub_id>")
def delete_subscription(sub_id: str) -> Response:
    query.args(set())
    subs().remove(_owned(sub_id).id)
    return Response(status=204)
