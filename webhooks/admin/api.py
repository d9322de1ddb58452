"""The admin API for scripts (bearer tokens) and the User Accounts tab's buttons (sessions).

    GET    /admin/subscriptions                 ours, with mailbox and expiry (?user= filters)
    POST   /admin/subscriptions                 {"user": staff id or email} or {"all": true}
    DELETE /admin/subscriptions/<id>            remove one
    GET    /admin/holds                         mailboxes with removals held for review
    POST   /admin/holds/<user_id>/release       carry the held removals out
    POST   /admin/holds/<user_id>/discard       forget them (the busy blocks stay)

Changes at Graph or Coconut are queued as jobs (202 with the job id): the web process never
calls either. A form post (from the User Accounts tab) is redirected back to the tab.
"""

from __future__ import annotations

import json
import re
import time

from flask import Blueprint, Response, current_app, flash, jsonify, redirect, request, url_for
from werkzeug.wrappers import Response as BaseResponse

from core import held_removals, jobs, store
from core.job_kinds import JobKind
from core.staff_status import ROSTER_KEY
from webhooks.admin.auth import require_admin

bp = Blueprint("admin_api", __name__)

_ID = re.compile(r"[A-Za-z0-9_-]{1,100}")


def _services():  # type: ignore[no-untyped-def]
    return current_app.extensions["exsync"]


def _answer(body: dict[str, object], status: int = 200) -> tuple[Response, int] | BaseResponse:
    if request.form and not request.is_json:
        flash(str(body.get("message", "Done.")), "ok" if status < 400 else "error")
        return redirect(url_for("admin_users.users"), code=303)
    return jsonify(body), status


@bp.get("/admin/subscriptions")
@require_admin
def list_subscriptions() -> Response:
    conn = _services().redis
    staff = _staff_ids(conn)
    wanted = request.args.get("user", "").strip().lower()
    found = []
    prefix = store.subscription_key("")
    for key in conn.scan_iter(match=prefix + "*", count=500):
        record = {k.decode(): v.decode() for k, v in conn.hgetall(key).items()}
        if "user_id" not in record:
            continue
        mailbox = {k.decode(): v.decode() for k, v in
                   conn.hgetall(store.mailbox_key(record["user_id"])).items()}  # fmt: skip
        item = {
            "id": key.decode()[len(prefix) :],
            "mailbox": record["user_id"],
            "address": mailbox.get("address", ""),
            "staff_id": mailbox.get("staff_id", ""),
            "expires_at": float(record.get("expires_at", 0)),
            "live": float(record.get("expires_at", 0)) > time.time(),
        }
        if wanted and wanted not in (item["address"], item["staff_id"], staff.get(wanted, "-")):
            continue
        found.append(item)
    return jsonify(subscriptions=sorted(found, key=lambda i: str(i["address"])))


@bp.post("/admin/subscriptions")
@require_admin
def register() -> tuple[Response, int] | BaseResponse:
    body = request.get_json(silent=True) if request.is_json else request.form.to_dict()
    if not isinstance(body, dict):
        return jsonify(error="Bad Request", reason='send {"user": …} or {"all": true}'), 400
    if body.get("all") in (True, "true", "1"):
        target = "all"
    else:
        user = str(body.get("user", "")).strip().lower()
        staff = _staff_ids(_services().redis)
        target = user if user in staff.values() else staff.get(user, "")
        if not target:
            reason = "user must be the Coconut staff id or email of a listed staff member"
            return jsonify(error="Bad Request", reason=reason), 400
    job = jobs.ensure_queued(_services().queue, JobKind.REGISTER_SUBSCRIPTIONS, target)
    return _answer({"status": "queued", "job_id": job, "message": "Subscription queued."}, 202)


@bp.delete("/admin/subscriptions/<subscription_id>")
@require_admin
def delete_subscription(subscription_id: str) -> tuple[Response, int] | BaseResponse:
    if not _ID.fullmatch(subscription_id):
        return jsonify(error="Bad Request", reason="not a subscription id"), 400
    if not _services().redis.exists(store.subscription_key(subscription_id)):
        return jsonify(error="Not Found", reason="no subscription of ours has that id"), 404
    job = jobs.ensure_queued(_services().queue, JobKind.DELETE_SUBSCRIPTION, subscription_id)
    return jsonify(status="queued", job_id=job), 202


@bp.get("/admin/holds")
@require_admin
def list_holds() -> Response:
    conn = _services().redis
    out = []
    for user_id, count in sorted(held_removals.held(conn).items()):
        address = conn.hget(store.mailbox_key(user_id), "address") or b""
        out.append({"mailbox": user_id, "address": address.decode(), "held_removals": count})
    return jsonify(holds=out)


@bp.post("/admin/holds/<user_id>/<action>")
@require_admin
def decide_hold(user_id: str, action: str) -> tuple[Response, int] | BaseResponse:
    conn = _services().redis
    if not _ID.fullmatch(user_id) or action not in ("release", "discard"):
        return jsonify(error="Not Found", reason="POST …/release or …/discard"), 404
    if not conn.exists(store.held_key(user_id)):
        return jsonify(error="Not Found", reason="no removals are held for that mailbox"), 404
    if action == "discard":
        count = held_removals.discard(conn, user_id)
        return _answer({"status": "discarded", "kept_blocks": count,
                        "message": f"{count} held removal(s) discarded."})  # fmt: skip
    job = jobs.ensure_queued(_services().queue, JobKind.RELEASE_HOLDS, user_id)
    return _answer({"status": "queued", "job_id": job, "message": "Release queued."}, 202)


def _staff_ids(conn) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """Email (lowercase) -> Coconut staff id, from the roster."""
    return {
        str(json.loads(v).get("email", "")).lower(): k.decode()
        for k, v in conn.hgetall(ROSTER_KEY).items()
    }
