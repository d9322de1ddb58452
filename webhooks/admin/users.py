"""Microsoft Exchange > User Accounts: every staff member's sync status, and the admin's levers.

    GET  /admin/exchange/users                  the tab: tiles, table, initial sync progress
    POST /admin/exchange/users/<id>/resync      queue this staff member's items and mailbox again
    POST /admin/exchange/users/recheck          `which=failed|all`: re-match and resync
    GET  /admin/api/users                       the same rows as JSON (bearer tokens welcome)

Rows come from core.staff_status (Redis only), read with the connection's state by the same
function `exsync status` uses; the levers queue jobs by dotted path, so this process never
calls Graph or Coconut.
"""

from __future__ import annotations

import re
from dataclasses import asdict

from flask import Blueprint, Response, current_app, flash, jsonify, redirect, request, url_for
from werkzeug.wrappers import Response as BaseResponse

from core import jobs, reconcile, staff_status, store
from core.connection_state import ConnectionState
from core.job_kinds import JobKind
from core.progress import progress
from core.staff_status import State
from webhooks.admin import pages
from webhooks.admin.auth import require_admin

bp = Blueprint("admin_users", __name__)

EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,255}\.[^@\s]+$")
STAFF_ID = re.compile(r"[0-9]{1,20}")  # ASCII: RQ job ids refuse other scripts' digits


def _current() -> tuple[ConnectionState, list[staff_status.StaffRow]]:
    services = current_app.extensions["exsync"]
    return staff_status.current(services.redis, services.settings)


def _rows() -> list[staff_status.StaffRow]:
    return _current()[1]


@bp.get("/admin/exchange/users")
@require_admin
def users() -> tuple[str, int]:
    services = current_app.extensions["exsync"]
    link, every = _current()
    shown_state = request.args.get("state", "")
    query = request.args.get("q", "").strip().lower()
    shown = [
        row for row in every
        if (not shown_state or row.state == shown_state)
        and (not query or query in row.name.lower() or query in row.email.lower())
    ]  # fmt: skip
    initial = progress(services.redis)
    return pages.render(
        "admin/users.html",
        rows=shown,
        counts=staff_status.counts(every),
        shown_state=shown_state,
        query=query,
        link=link,
        display_name=link.stored.display_name,
        initial=initial,
        # What the sync is stuck on, named in the initial sync's banner (else "13 of 14 items"
        # says nothing about the fourteenth): items Coconut refused and staff in error.
        stuck=[f"{r.name}: {item.text}" for r in every for item in r.refused]
        + [f"{r.name}: {r.problem}" for r in every if r.state == staff_status.State.ERROR],
        manual=services.settings.manual_user_sync,
        per_user={u.staff_id: u for u in initial.users},
        # Also while the initial sync waits for a worker: it has not written its progress yet.
        refresh=initial.state in ("running", "queued")
        or bool(services.redis.exists(store.dirty_key("initial_sync", "exchange"))),
    )


@bp.post("/admin/exchange/users/<staff_id>/resync")
@require_admin
def resync(staff_id: str) -> BaseResponse:
    if not STAFF_ID.fullmatch(staff_id):
        return redirect(url_for("admin_users.users"))
    reconcile.resync(
        current_app.extensions["exsync"].queue, [r for r in _rows() if r.staff_id == staff_id]
    )
    flash("Resync queued.", "ok")
    return redirect(url_for("admin_users.users"), code=303)


@bp.post("/admin/exchange/users/<staff_id>/mailbox")
@require_admin
def override_mailbox(staff_id: str) -> BaseResponse:
    """Match this staff member to another mailbox than their Coconut email (blank: the email)."""
    services = current_app.extensions["exsync"]
    address = request.form.get("address", "").strip().lower()
    if not STAFF_ID.fullmatch(staff_id) or (address and not EMAIL.match(address)):
        flash("Enter the mailbox's email address, or leave it blank to use the Coconut email.",
              "error")  # fmt: skip
        return redirect(url_for("admin_users.users"), code=303)
    key = store.mailbox_override_key(staff_id)
    if address:
        services.redis.set(key, address)
    else:
        services.redis.delete(key)
    services.redis.hdel(store.staff_key(staff_id), "checked_at")
    jobs.ensure_queued(services.queue, JobKind.SYNC_STAFF, staff_id)
    flash(f"Mailbox match {'set to ' + address if address else 'reset'}; resync queued.", "ok")
    return redirect(url_for("admin_users.users"), code=303)


@bp.post("/admin/exchange/users/<staff_id>/enabled")
@require_admin
def set_enabled(staff_id: str) -> BaseResponse:
    """Manual user syncing: switch one staff member's sync on or off."""
    services = current_app.extensions["exsync"]
    if not STAFF_ID.fullmatch(staff_id):
        return redirect(url_for("admin_users.users"), code=303)
    turn_on = request.form.get("enabled") == "on"
    if turn_on:
        services.redis.sadd(staff_status.ENABLED_KEY, staff_id)
        services.redis.hdel(store.staff_key(staff_id), "warning")
    else:
        services.redis.srem(staff_status.ENABLED_KEY, staff_id)
    jobs.ensure_queued(services.queue, JobKind.SYNC_STAFF, staff_id)
    flash(f"Sync {'enabled' if turn_on else 'disabled'}; the change is being applied.", "ok")
    return redirect(url_for("admin_users.users"), code=303)


@bp.post("/admin/exchange/users/recheck")
@require_admin
def recheck() -> BaseResponse:
    which = request.form.get("which", "failed")
    wanted = [r for r in _rows() if which == "all" or r.state in (State.ERROR, State.WARNING)]
    reconcile.resync(current_app.extensions["exsync"].queue, wanted)
    flash(f"Recheck queued for {len(wanted)} staff member(s).", "ok")
    return redirect(url_for("admin_users.users"), code=303)


@bp.get("/admin/api/users")
@require_admin
def users_json() -> Response:
    link, every = _current()
    return jsonify(
        connection={
            "state": str(link.link), "syncing": link.syncing, "access": link.access,
            "headline": link.headline, "detail": link.detail,
        },
        counts={str(k): v for k, v in staff_status.counts(every).items()},
        users=[{**asdict(row), "state": str(row.state)} for row in every],
    )  # fmt: skip
