"""`exsync subscriptions list|create|renew|delete` and `exsync holds list|release|discard`.

A process of its own, so unlike the web app it may call Graph directly (with the workers'
settings); each command prints what it did and exits 0, or 1 when Graph refused.
"""

from __future__ import annotations

import sys
import time

import click

from core.settings import Settings

REQUIRED = ("tenant_id", "client_id", "coconut_url")


def _context(settings: Settings):  # type: ignore[no-untyped-def]
    from workers.context import WorkerContext, install

    ctx = WorkerContext(settings)
    install(ctx)
    return ctx


@click.group()
def subscriptions() -> None:
    """Graph subscriptions, one per staff mailbox (app-only mode)."""


@subscriptions.command("list")
def list_() -> None:
    """Our subscriptions: mailbox, expiry, renewal time."""
    from exsync.cli import _settings
    from subscriptions import manager

    ctx = _context(_settings())
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
def create(user: str | None, every: bool) -> None:
    """Subscribe one staff member's mailbox (by email) or, with --all, every one."""
    from exsync.cli import _settings
    from subscriptions import manager
    from workers import directory

    if not user and not every:
        raise click.UsageError("name a staff email, or pass --all")
    ctx = _context(_settings(*REQUIRED))
    if every:
        click.echo(f"reconciled: {manager.reconcile(ctx)}")
        return
    for staff, mailbox in directory.staff_mailboxes(ctx):
        if user.lower() in (staff.email.lower(), mailbox.address, str(staff.id)):  # type: ignore[union-attr]
            record = manager.ensure(ctx, mailbox.user_id)
            click.echo(f"subscribed {mailbox.address}: {record.subscription_id}")
            return
    click.echo(f"exsync: no staff member who takes appointments has {user}", err=True)
    sys.exit(1)


@subscriptions.command()
@click.argument("subscription_ids", nargs=-1)
@click.option("--all", "every", is_flag=True, help="Renew every subscription now.")
def renew(subscription_ids: tuple[str, ...], every: bool) -> None:
    """Renew now (normally the scheduler does this before expiry)."""
    from exsync.cli import _settings
    from subscriptions import manager

    ctx = _context(_settings(*REQUIRED))
    ids = [r.subscription_id for r in manager.all_local(ctx)] if every else subscription_ids
    for sub_id in ids:
        record = manager.renew(ctx, sub_id)
        click.echo(f"renewed {sub_id}" if record else f"not ours: {sub_id}")


@subscriptions.command()
@click.argument("subscription_ids", nargs=-1)
@click.option("--all", "every", is_flag=True, help="Delete every subscription of ours.")
def delete(subscription_ids: tuple[str, ...], every: bool) -> None:
    """Delete at Graph and forget (the scheduler recreates wanted ones at its next reconcile)."""
    from exsync.cli import _settings
    from subscriptions import manager

    ctx = _context(_settings(*REQUIRED))
    ids = [r.subscription_id for r in manager.all_local(ctx)] if every else subscription_ids
    for sub_id in ids:
        manager.delete(ctx, sub_id)
        click.echo(f"deleted {sub_id}")


@click.group()
def holds() -> None:
    """Busy-block removals held for review (a round that would remove most of a mailbox's)."""


@holds.command("list")
def holds_list() -> None:
    from core import holds as held
    from core import store
    from exsync.cli import _settings

    conn = store.connect(_settings().redis_url)
    found = held.held(conn)
    if not found:
        click.echo("no removals held")
    for user_id, count in sorted(found.items()):
        address = (conn.hget(store.mailbox_key(user_id), "address") or b"").decode()
        click.echo(f"{user_id}\t{address}\t{count} removal(s) held")


@holds.command()
@click.argument("user_id")
def release(user_id: str) -> None:
    """Carry out the held removals of one mailbox (its Graph user id, from `holds list`)."""
    from exsync.cli import _settings
    from workers.holds import release_holds

    _context(_settings(*REQUIRED))
    click.echo(f"released: {release_holds(user_id)} busy block(s) removed")


@holds.command()
@click.argument("user_id")
def discard(user_id: str) -> None:
    """Forget the held removals of one mailbox; its busy blocks stay."""
    from core import holds as held
    from core import store
    from exsync.cli import _settings

    count = held.discard(store.connect(_settings().redis_url), user_id)
    click.echo(f"discarded {count} held removal(s); the busy blocks stay")
