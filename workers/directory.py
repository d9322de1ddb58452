"""Which Exchange mailbox belongs to which Coconut staff member.

A staff member is matched to the mailbox whose primary SMTP address equals their Coconut email
(an admin may override the address). No match is a warning on the User Accounts view, not an
error. Jobs key everything by the Graph user id (a GUID: safe in RQ job ids, stable across
renames); the match is cached in Redis both ways.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass

from msgraph.generated.models.o_data_errors.o_data_error import ODataError

from core import jobs, store
from core.coconut.models import Staff
from core.job_kinds import JobKind
from core.staff_status import ENABLED_KEY, NOT_ENABLED, ROSTER_KEY
from workers.context import WorkerContext
from workers.exchange import refusal

log = logging.getLogger(__name__)

MATCH_TTL = 3600


@dataclass(frozen=True)
class Mailbox:
    user_id: str  # Graph user id
    address: str


def mailbox_for(ctx: WorkerContext, staff_id: str, email: str) -> Mailbox | None:
    """The staff member's mailbox, or None (recorded as that staff member's warning)."""
    cached = ctx.redis.hgetall(store.staff_key(staff_id))
    address = (
        (ctx.redis.get(store.mailbox_override_key(staff_id)) or email.encode())
        .decode()
        .strip()
        .lower()
    )
    fresh = time.time() - float(cached.get(b"checked_at", 0)) < MATCH_TTL
    if fresh and cached.get(b"address", b"").decode() == address and cached.get(b"user_id"):
        return Mailbox(cached[b"user_id"].decode(), address)
    try:
        user_id = ctx.run(_lookup(ctx, address))
    except ODataError as exc:
        if exc.response_status_code != 403:
            raise
        ctx.redis.hset(
            store.staff_key(staff_id), "error", refusal(exc, delegated=not ctx.impersonation)
        )
        log.warning("directory.refused", extra={"staff_id": staff_id})
        return None
    previous = cached.get(b"user_id", b"").decode()
    if previous and previous != user_id:
        # The staff member no longer owns that mailbox: stop syncing it into their calendar.
        ctx.redis.hdel(store.mailbox_key(previous), "staff_id")
        jobs.ensure_queued(ctx.queue, JobKind.FORGET_MAILBOX, previous)
    pipe = ctx.redis.pipeline()
    pipe.hset(store.staff_key(staff_id), mapping={"address": address, "checked_at": time.time()})
    if user_id is None:
        pipe.hdel(store.staff_key(staff_id), "user_id")
        pipe.hset(store.staff_key(staff_id), "warning", f"no mailbox matches {address}")
        pipe.execute()
        log.info("directory.no_mailbox", extra={"staff_id": staff_id})
        return None
    pipe.hset(store.staff_key(staff_id), mapping={"user_id": user_id, "warning": ""})
    pipe.hset(store.mailbox_key(user_id), mapping={"staff_id": staff_id, "address": address})
    pipe.execute()
    return Mailbox(user_id, address)


def enabled(ctx: WorkerContext, staff_id: str) -> bool:
    """Always, unless manual user syncing is on and an admin has not enabled this staff member
    (then their row says so)."""
    if not ctx.settings.manual_user_sync or ctx.redis.sismember(ENABLED_KEY, staff_id):
        return True
    ctx.redis.hset(store.staff_key(staff_id), "warning", NOT_ENABLED)
    return False


def mailbox_of(ctx: WorkerContext, staff: Staff | None) -> str | None:
    """The staff member's mailbox when the sync covers them; else a warning says why not."""
    if staff is None:
        return None
    if not (staff.takes_appointments and staff.active):
        ctx.redis.hset(
            store.staff_key(str(staff.id)),
            "warning",
            "no longer takes appointments in Coconut: their Outlook projections were removed",
        )
        return None
    if not enabled(ctx, str(staff.id)):
        return None
    mailbox = mailbox_for(ctx, str(staff.id), staff.email)
    return mailbox.user_id if mailbox is not None else None


def staff_for(ctx: WorkerContext, user_id: str) -> str | None:
    """The Coconut staff id matched to a mailbox (set when the staff member was matched)."""
    raw = ctx.redis.hget(store.mailbox_key(user_id), "staff_id")
    return raw.decode() if raw else None


async def _lookup(ctx: WorkerContext, address: str) -> str | None:
    try:
        user = await ctx.gate.call(address, lambda: ctx.graph.users.by_user_id(address).get())
    except ODataError as exc:
        if exc.response_status_code == 404:
            return None
        if exc.response_status_code == 403 and not ctx.impersonation:
            # The service account may not read the directory (it asks for User.Read only);
            # Graph takes the address wherever a user id goes, and the calendar itself tells
            # whether it was shared with us.
            return address
        raise
    if user is None or not user.id:
        return None
    mail = (user.mail or user.user_principal_name or "").lower()
    return user.id if mail == address else None


def staff_mailboxes(ctx: WorkerContext) -> list[tuple[Staff, Mailbox]]:
    """Every active Coconut staff member who takes appointments and has a mailbox: what the
    sync covers. Staff without a mailbox are left out here and carry a warning (mailbox_for).

    Every active user is also written to the roster, which the admin's User Accounts tab
    lists: the web process never calls Coconut itself.
    """
    matched = []
    roster: dict[str, str] = {}
    for staff in ctx.coconut.users():
        if not staff.active:
            continue
        roster[str(staff.id)] = json.dumps(
            {"name": f"{staff.first_name} {staff.last_name}".strip(), "email": staff.email,
             "takes_appointments": staff.takes_appointments}
        )  # fmt: skip
        if not (staff.takes_appointments and enabled(ctx, str(staff.id))):
            continue
        mailbox = mailbox_for(ctx, str(staff.id), staff.email)
        if mailbox is not None:
            matched.append((staff, mailbox))
    pipe = ctx.redis.pipeline()
    pipe.delete(ROSTER_KEY)
    if roster:
        pipe.hset(ROSTER_KEY, mapping=roster)
    pipe.execute()
    return matched
