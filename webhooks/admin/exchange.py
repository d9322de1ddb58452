"""Settings > Integrations & API > Microsoft Exchange: the Configuration tab and Authorize.

    GET  /admin                       → the Configuration tab
    GET  /admin/exchange              the form, filled from the stored connection
    POST /admin/exchange              validate, save (secret encrypted), back to GET (303);
                                      with action=fill only show the chosen cloud's endpoints
    POST /admin/exchange/authorize    start the service account's sign-in (303 to Microsoft)
    GET  /admin/exchange/callback     Microsoft's answer: connect, or say why not
    GET  /admin/exchange/wrong-account  who signed in instead (the callback redirects here)

On success the callback queues the initial sync by dotted path, so the web process never
imports the workers.
"""

from __future__ import annotations

import logging

from flask import Blueprint, current_app, flash, redirect, request, session, url_for
from werkzeug.wrappers import Response as BaseResponse

from core import connection, connection_state, jobs, reconcile
from core.connection import Connection, Status
from core.job_kinds import JobKind
from webhooks.admin import authorize, pages
from webhooks.admin.auth import require_admin
from webhooks.admin.forms import ConfigurationForm, resolve_cloud

log = logging.getLogger(__name__)
bp = Blueprint("admin_exchange", __name__)

INITIAL_SYNC_ITEM = "exchange"
INITIAL_SYNC_TIMEOUT = 6 * 3600
# Settings that change what the sync makes: saving a new value reconciles what exists.
RULES = ("show_event_titles", "sync_past_days", "sync_future_days", "edit_policy")


def _services():  # type: ignore[no-untyped-def]
    return current_app.extensions["exsync"]


def _box():  # type: ignore[no-untyped-def]
    return current_app.extensions["exsync_secrets"]


def callback_url() -> str:
    """The redirect URI to register on the Entra app (shown on the page)."""
    return _services().settings.public_url + url_for("admin_exchange.callback")


@bp.get("/admin")
@require_admin
def home() -> BaseResponse:
    return redirect(url_for("admin_exchange.configuration"))


@bp.get("/admin/exchange")
@require_admin
def configuration() -> tuple[str, int]:
    services = _services()
    stored = connection.load(services.redis)
    form = ConfigurationForm(None, services.settings, stored.has_client_secret, obj=stored)
    form.shown_cloud.data = stored.cloud
    form.confirm_endpoints.data = stored.status != Status.NOT_CONFIGURED
    return _page(form, stored)


@bp.post("/admin/exchange")
@require_admin
def save() -> tuple[str, int] | BaseResponse:
    services = _services()
    stored = connection.load(services.redis)
    form = ConfigurationForm(request.form, services.settings, stored.has_client_secret)
    if request.form.get("action") == "fill":
        # "Fill in endpoints": show the chosen cloud's endpoints to confirm; nothing is saved.
        form.shown_cloud.data = form.endpoints_name()
        form.confirm_endpoints.data = False
        return _page(form, stored)
    if not form.validate():
        log.info("exchange.settings_refused", extra={"fields": ",".join(sorted(form.errors))})
        # Show the endpoints of the cloud just chosen, ready to be confirmed.
        form.shown_cloud.data = form.endpoints_name()
        form.confirm_endpoints.data = False
        return _page(form, stored, status=422)
    saved = connection.save_configuration(
        services.redis, _box(), form.connection(), form.client_secret.data or None
    )
    log.info("exchange.settings_saved", extra={"tenant": saved.tenant_id, "cloud": saved.cloud})
    changed = [name for name in RULES if getattr(stored, name) != getattr(saved, name)]
    if changed and saved.status == Status.CONNECTED:
        # What exists was made by the old rules: every mailbox is reconciled under the new.
        count = reconcile.request_all(services.queue, f"settings changed: {', '.join(changed)}")
        log.info("exchange.reconcile_requested", extra={"mailboxes": count})
    if saved.status == Status.CONNECTED:
        flash("Saved.", "ok")
    else:
        flash("Saved. Next: click Authorize and sign in as the service account.", "ok")
    return redirect(url_for("admin_exchange.configuration"), code=303)


@bp.post("/admin/exchange/authorize")
@require_admin
def start_authorize() -> tuple[object, int] | BaseResponse:
    if "sid" not in session:
        return pages.refusal(
            400,
            "Authorize in a browser",
            "The service account signs in interactively: click "
            "Authorize on the Configuration tab while signed in there.",
        )
    services = _services()
    stored = connection.load(services.redis)
    if stored.status == Status.NOT_CONFIGURED or not stored.has_client_secret:
        return pages.refusal(
            409,
            "Save the configuration first",
            "Fill in and save the Configuration tab, then click Authorize.",
        )
    ca_file = services.settings.graph_ca_file
    try:
        url = authorize.start(
            services.redis, _box(), stored, ca_file, callback_url(), session["sid"]
        )
    except authorize.SignInFailed as exc:
        return _sign_in_failed(exc, stored)
    return redirect(url, code=303)


@bp.get("/admin/exchange/callback")
@require_admin
def callback() -> tuple[object, int] | BaseResponse:
    services = _services()
    stored = connection.load(services.redis)
    response = {key: request.args[key] for key in request.args}
    sid, ca_file = session.get("sid", ""), services.settings.graph_ca_file
    try:
        done = authorize.finish(services.redis, _box(), stored, ca_file, response, sid)
    except authorize.FlowExpired as exc:
        log.info("exchange.callback_refused", extra={"reason": str(exc)})
        return pages.refusal(
            400,
            "This sign-in cannot be used",
            f"{exc}. It may have taken longer than ten minutes, or been opened in another "
            "browser. Go back to the Configuration tab and click Authorize again.",
        )
    except authorize.SignInFailed as exc:
        return _sign_in_failed(exc, stored)
    except authorize.WrongAccount as exc:
        log.info("exchange.wrong_account", extra={"tenant": stored.tenant_id})
        # To a clean address: the callback's query holds the authorization code, which must
        # stay out of the address bar, the history and any Referer.
        session["wrong_account"] = [exc.signed_in, exc.expected, exc.reason]
        return redirect(url_for("admin_exchange.wrong_account"), code=303)
    connection.mark_connected(services.redis, _box(), done.refresh_token, done.account)
    jobs.ensure_queued(
        services.queue,
        JobKind.INITIAL_SYNC,
        INITIAL_SYNC_ITEM,
        timeout=INITIAL_SYNC_TIMEOUT,
    )
    log.info("exchange.connected", extra={"tenant": stored.tenant_id, "account": done.account})
    flash(
        f"Connected as {done.account}. The initial sync has started: every staff member set up "
        "to take appointments is being synced both ways.",
        "ok",
    )
    return redirect(url_for("admin_exchange.configuration"), code=303)


@bp.get("/admin/exchange/wrong-account")
@require_admin
def wrong_account() -> tuple[str, int] | BaseResponse:
    """Who signed in instead of the service account, once; then back to the Configuration tab."""
    found = session.pop("wrong_account", None)
    if not found:
        return redirect(url_for("admin_exchange.configuration"), code=303)
    signed_in, expected, reason = found
    stored = connection.load(_services().redis)
    return pages.render(
        "admin/wrong_account.html", status=403, signed_in=signed_in, expected=expected,
        reason=reason, display_name=stored.display_name,
    )  # fmt: skip


def _sign_in_failed(exc: authorize.SignInFailed, stored: Connection) -> tuple[str, int]:
    log.info("exchange.signin_error", extra={"code": exc.explanation.code})
    return pages.render(
        "admin/sign_in_error.html",
        status=400,
        explanation=exc.explanation,
        microsoft_says=exc.microsoft_says,
        display_name=stored.display_name,
    )


def _page(form: ConfigurationForm, stored: Connection, status: int = 200) -> tuple[str, int]:
    cloud = resolve_cloud(form.shown_cloud.data or "worldwide", _services().settings)
    tenant = form.tenant_id.data or "{tenant}"
    return pages.render(
        "admin/exchange.html",
        status=status,
        form=form,
        stored=stored,
        # What the status card says comes from the rule every screen reads: an environment-only
        # setup (the demo) shows as the connection it is, not as "Not configured".
        link=connection_state.current(_services().redis, _services().settings),
        cloud=cloud,
        sign_in_authority=f"{cloud.authority}/{tenant}",
        callback_url=callback_url(),
    )
