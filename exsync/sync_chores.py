"""`exsync subscriptions list|create|renew|delete` and `exsync holds list|release|discard`.

A process of its own, so unlike the web app it may call Graph and Coconut directly, with the
credential a worker would use now (core.microsoft.graph_access): the connection the admin
authorized on the Configuration tab, read from Redis, else the EXSYNC_TENANT_ID / EXSYNC_CLIENT_ID /
EXSYNC_CLIENT_SECRET settings. Coconut's API is only ever in the environment
(EXSYNC_COCONUT_URL and its client), so only the commands that call Coconut ask for it. Each
command prints what it did and exits 0; 1 when Graph or Coconut refused or the item is not
ours; 2 for bad usage, an unknown staff member, a missing setting (the message says which and
where to set it), or a Graph credential that yields no token (a configuration problem).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import wraps
from typing import Any, ParamSpec, TypeVar

import click

from core.settings import Settings
from exsync.command import EXIT_CONFIG, EXIT_PROBLEM, command_settings

P = ParamSpec("P")
R = TypeVar("R")
CONFIGURATION_TAB = "Settings > Integrations & API > Microsoft Exchange > Configuration"


def _context(settings: Settings, *, graph: bool = False, coconut: bool = False):  # type: ignore[no-untyped-def]
    """A worker's context for a command that calls Graph and/or Coconut; exits 2 naming what is
    missing, and where to set it, before either is called."""
    from workers.context import WorkerContext, install

    ctx = WorkerContext(settings)
    ctx.redis.ping()  # Redis first: unreachable exits 3 before Graph or Coconut is called
    problems = [
        *([_graph_problem(settings, ctx.redis)] if graph else []),
        *([_coconut_problem(settings)] if coconut else []),
    ]
    if any(problems):
        for problem in filter(None, problems):
            click.echo(f"exsync: {problem}", err=True)
        sys.exit(EXIT_CONFIG)
    install(ctx)
    return ctx


def _graph_problem(settings: Settings, conn: Any) -> str | None:
    """Why no Graph credential can be had by the workers' rule, or None."""
    from core import connection
    from core.microsoft import graph_access

    try:
        graph_access.current(settings, conn)
    except graph_access.NotConfigured:
        stored = connection.load(conn)
        if stored.status in connection.AUTHORIZED:
            account = stored.connected_account or "the service account"
            return (
                f"the Exchange connection (authorized as {account}) is stored in Redis "
                "encrypted: set EXSYNC_SECRET_KEY in the environment to the key the web app has"
            )
        return (
            "this command calls Microsoft Graph and no Exchange connection is authorized: "
            f"authorize one in the admin pages ({CONFIGURATION_TAB}), or set EXSYNC_TENANT_ID, "
            "EXSYNC_CLIENT_ID and EXSYNC_CLIENT_SECRET in the environment"
        )
    except graph_access.Misconfigured as exc:
        where = "in the environment" if exc.source == "environment" else "on the Configuration tab"
        return f"the Graph app registration {where} is incomplete: {exc}"
    return None


def _coconut_problem(settings: Settings) -> str | None:
    if settings.coconut_url:
        return None
    return (
        "this command calls Coconut: set EXSYNC_COCONUT_URL (with EXSYNC_COCONUT_CLIENT_ID and "
        "EXSYNC_COCONUT_CLIENT_SECRET) in the environment, as the workers have them; Coconut's "
        "API settings are not kept in Redis"
    )


def _remote(command: Callable[P, R]) -> Callable[P, R]:
    """Graph's and Coconut's refusals as one line and an exit code, never a traceback."""

    @wraps(command)
    def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
        with _refusals():
            return command(*args, **kwargs)

    return guarded


@contextmanager
def _refusals() -> Iterator[None]:
    from azure.core.exceptions import ClientAuthenticationError
    from msgraph.generated.models.o_data_errors.o_data_error import ODataError

    from core.coconut.models import CoconutError
    from core.microsoft.graph_access import plain_refusal

    try:
        yield
    except ClientAuthenticationError as exc:
        click.echo(f"exsync: no Graph token: {plain_refusal(str(exc.message or exc))}", err=True)
        sys.exit(EXIT_CONFIG)
    except ODataError as exc:
        error = exc.error
        what = f"{error.code}: {error.message}" if error else str(exc.response_status_code)
        click.echo(f"exsync: Graph refused ({exc.response_status_code} {what})", err=True)
        sys.exit(EXIT_PROBLEM)
    except CoconutError as exc:
        click.echo(f"exsync: Coconut refused ({exc})", err=True)
        sys.exit(EXIT_PROBLEM)


@click.group()
def subscriptions() -> None:
    """Graph subscriptions, by hand.

    One per staff mailbox in app-only mode; the scheduler keeps them without help.
    """


@subscriptions.command("list")
def list_() -> None:
    """List ours: mailbox, expiry, renewal."""
    from subscriptions import manager

    ctx = _context(command_settings())
    records = sorted(manager.all_local(ctx), key=lambda r: r.expires_at)
    if not records:
        click.echo("no subscriptions")
    now = time.time()
    for r in records:
        address = (ctx.redis.hget(f"exsync:mailbox:{r.user_id}", "address") or b"").decode()
        state = "live" if r.expires_at > now else "expired"
        expires, renews = (r.expires_at - now) / 3600, (r.renew_at - now) / 3600
        click.echo(
            f"{r.subscription_id}\t{address or r.user_id}\t{state}\t"
            f"expires in {expires:.1f} h\trenews in {renews:.1f} h"
        )


@subscriptions.command()
@click.argument("user", required=False)
@click.option("--all", "every", is_flag=True, help="Reconcile: one for every staff mailbox.")
@_remote
def create(user: str | None, every: bool) -> None:
    """Subscribe a staff mailbox, or --all.

    USER is the staff member's email or Coconut staff id; --all reconciles every mailbox.
    """
    from subscriptions import manager
    from workers import directory

    if bool(user) == every:
        raise click.UsageError("name a staff email or id, or pass --all")
    ctx = _context(command_settings(), graph=True, coconut=True)
    if every:
        click.echo(f"reconciled: {manager.reconcile(ctx)}")
        return
    wanted = (user or "").strip().lower()
    for staff, mailbox in directory.staff_mailboxes(ctx):
        if wanted in (staff.email.lower(), mailbox.address, str(staff.id)):
            record = manager.ensure(ctx, mailbox.user_id)
            click.echo(f"subscribed {mailbox.address}: {record.subscription_id}")
            return
    raise click.BadParameter(
        f"no staff member who takes appointments and has a mailbox is {user!r}",
        param_hint="USER",
    )


def _ids_or_all(every_help: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """A subscription command's arguments: the ids it acts on, or --all."""

    def wrap(command: Callable[P, R]) -> Callable[P, R]:
        command = click.option("--all", "every", is_flag=True, help=every_help)(command)
        return click.argument("subscription_ids", nargs=-1)(command)

    return wrap


def _chosen(ids: tuple[str, ...], every: bool) -> tuple[Any, list[str], list[str]]:
    """A context with Graph, and (ours, not ours) among the ids (every one of ours with --all)."""
    ctx = _context(command_settings(), graph=True)
    return (ctx, *_ours(ctx, ids, every))


def _ours(ctx: Any, ids: tuple[str, ...], every: bool) -> tuple[list[str], list[str]]:
    """(ours, not ours) among the named ids, or every one of ours with --all."""
    from subscriptions import manager

    if bool(ids) == every:
        raise click.UsageError("name subscription ids (`exsync subscriptions list`) or --all")
    if every:
        return [r.subscription_id for r in manager.all_local(ctx)], []
    known = [i for i in ids if manager.local(ctx, i) is not None]
    return known, [i for i in ids if i not in known]


@subscriptions.command()
@_ids_or_all("Renew every subscription now.")
@_remote
def renew(subscription_ids: tuple[str, ...], every: bool) -> None:
    """Renew now, by id or --all.

    The scheduler does this before expiry; a subscription Graph lost is recreated.
    """
    from subscriptions import manager

    ctx, ours, strangers = _chosen(subscription_ids, every)
    lost = []
    for sub_id in ours:
        record = manager.renew(ctx, sub_id)
        if record is None:
            lost.append(sub_id)
            click.echo(f"exsync: Graph no longer has {sub_id}; not recreated (not syncing "
                       "app-only)", err=True)  # fmt: skip
        elif record.subscription_id != sub_id:
            click.echo(f"recreated {sub_id} as {record.subscription_id} (Graph had lost it)")
        else:
            hours = (record.expires_at - time.time()) / 3600
            click.echo(f"renewed {sub_id}: expires in {hours:.1f} h")
    _finish(strangers, failed=bool(lost))


@subscriptions.command()
@_ids_or_all("Delete every subscription of ours (the scheduler recreates the wanted ones).")
@_remote
def delete(subscription_ids: tuple[str, ...], every: bool) -> None:
    """Delete at Graph, by id or --all."""
    from subscriptions import manager

    ctx, ours, strangers = _chosen(subscription_ids, every)
    for sub_id in ours:
        manager.delete(ctx, sub_id)
        click.echo(f"deleted {sub_id}")
    _finish(strangers)


def _finish(strangers: list[str], *, failed: bool = False) -> None:
    """Name the ids that are not subscriptions of ours; exit 1 for them or for a failure."""
    for sub_id in strangers:
        click.echo(f"exsync: not a subscription of ours: {sub_id}", err=True)
    if strangers or failed:
        sys.exit(EXIT_PROBLEM)


@click.group()
def holds() -> None:
    """Busy-block removals held for review.

    A round that would remove most of a mailbox's busy blocks holds them for an admin.
    """


@holds.command("list")
def holds_list() -> None:
    """List mailboxes with removals held."""
    from core import held_removals, store

    settings = command_settings()
    conn = store.connect_service(settings)
    found = held_removals.held(conn)
    if not found:
        click.echo("no removals held")
    for user_id, count in sorted(found.items()):
        address = (conn.hget(store.mailbox_key(user_id), "address") or b"").decode()
        click.echo(f"{user_id}\t{address}\t{count} removal(s) held")


def _held(conn: Any, user_id: str) -> None:
    """Exit 1 unless removals are held for the mailbox."""
    from core import store

    if not conn.exists(store.held_key(user_id)):
        click.echo(f"exsync: no removals are held for {user_id} (see `exsync holds list`)",
                   err=True)  # fmt: skip
        sys.exit(EXIT_PROBLEM)


@holds.command()
@click.argument("user_id")
@_remote
def release(user_id: str) -> None:
    """Carry out a mailbox's held removals.

    USER_ID is the mailbox's Graph user id, from `exsync holds list`.
    """
    from workers.held_release import release_holds

    ctx = _context(command_settings(), coconut=True)
    _held(ctx.redis, user_id)
    click.echo(f"released: {release_holds(user_id)} busy block(s) removed")


@holds.command()
@click.argument("user_id")
def discard(user_id: str) -> None:
    """Forget a mailbox's held removals.

    The busy blocks stay in Coconut.
    """
    from core import held_removals, store

    settings = command_settings()
    conn = store.connect_service(settings)
    _held(conn, user_id)
    count = held_removals.discard(conn, user_id)
    click.echo(f"discarded {count} held removal(s); the busy blocks stay")
