"""Microsoft Exchange > Disconnect: remove our subscriptions and, if the admin asks, our items.

    GET  /admin/exchange/disconnect    what will go, counted exactly, and the confirmation form
    POST /admin/exchange/disconnect    `confirm=yes`, `remove_items=on|off`: queue it (303 back)

The counts come from our mappings in Redis, which is also all the job removes: events we
projected into Outlook and busy blocks we wrote into Coconut, never anything staff made.
"""

from __future__ import annotations

from collections.abc import Callable

from flask import Blueprint, current_app, flash, redirect, request, url_for
from werkzeug.wrappers import Response as BaseResponse

from core import connection, jobs, store
from core.connection import Status
from core.job_kinds import JobKind
from webhooks.admin import pages
from webhooks.admin.auth import require_admin

bp = Blueprint("admin_disconnect", __name__)


def counts() -> dict[str, int]:
    conn = current_app.extensions["exsync"].redis

    def total(key: Callable[[str], str]) -> int:
        return sum(conn.hlen(k) for k in conn.scan_iter(match=key("*"), count=500))

    subscriptions = sum(
        1 for k in conn.scan_iter(match=store.subscription_key("*"), count=500)
        if conn.hexists(k, "user_id")
    )  # fmt: skip
    return {
        "subscriptions": subscriptions,
        "events": total(store.projected_key),
        "blocks": total(store.block_key),
    }


@bp.get("/admin/exchange/disconnect")
@require_admin
def confirm() -> tuple[str, int]:
    stored = connection.load(current_app.extensions["exsync"].redis)
    return pages.render("admin/disconnect.html", stored=stored, counts=counts())


@bp.post("/admin/exchange/disconnect")
@require_admin
def disconnect() -> BaseResponse | tuple[str, int]:
    services = current_app.extensions["exsync"]
    stored = connection.load(services.redis)
    if request.form.get("confirm") != "yes":
        flash("Tick the confirmation to disconnect.", "error")
        return redirect(url_for("admin_disconnect.confirm"), code=303)
    # Disconnecting again retries one whose job gave up (Graph or Coconut refusing for long).
    if stored.status not in (Status.CONNECTED, Status.REAUTHORIZE, Status.DISCONNECTING):
        flash("There is no connection to disconnect.", "error")
        return redirect(url_for("admin_exchange.configuration"), code=303)
    what = "everything" if request.form.get("remove_items") == "on" else "subscriptions"
    connection.mark_disconnecting(services.redis)
    services.redis.delete(store.disconnect_key())
    jobs.ensure_queued(services.queue, JobKind.DISCONNECT, what)
    items = (
        ", with our events in Outlook and busy blocks in Coconut."
        if what == "everything"
        else ". Events and busy blocks already synced stay."
    )
    flash(f"Disconnecting: our subscriptions are being removed{items}", "ok")
    return redirect(url_for("admin_exchange.configuration"), code=303)
