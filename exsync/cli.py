"""`exsync`: one command for every process of the service and for the chores of running it.

Exit codes scripts can rely on: 0 done, 1 the chore ran and found a problem, 2 bad usage or
configuration (the message names the setting), 3 Redis is unreachable. Click answers bad usage
with 2 itself; `Exsync.invoke` turns Redis refusing EXSYNC_REDIS_URL's credentials, in any
command, into 2 and Redis being unreachable into 3.
"""

from __future__ import annotations

import os
import ssl
import sys
import tempfile
from typing import Any
from urllib.parse import urlsplit

import click
import redis

from core import jobs, store
from core.job_kinds import JobKind
from core.settings import Settings
from exsync import resync, sync_chores
from exsync.command import (
    EXIT_CONFIG,
    EXIT_PROBLEM,
    EXIT_UNREACHABLE,
    SETTINGS_META,
    command_settings,
)


class Exsync(click.Group):
    """The command group; anywhere below it, Redis refusing the credentials exits 2 and Redis
    unreachable exits 3, each with one line that never shows the password."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except redis.AuthenticationError as exc:
            where = _where(ctx)
            click.echo(f"exsync: Redis{where} refused the credentials in EXSYNC_REDIS_URL: {exc}",
                       err=True)  # fmt: skip
            ctx.exit(EXIT_CONFIG)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            click.echo(f"exsync: Redis unreachable{_where(ctx)}: {exc}", err=True)
            ctx.exit(EXIT_UNREACHABLE)


def _where(ctx: click.Context) -> str:
    settings = ctx.meta.get(SETTINGS_META)
    return f" at {_without_password(settings.redis_url)}" if settings else ""


def _redis_accepts(settings: Settings) -> None:
    """Stop a long-running process at start (exit 2) when Redis refuses EXSYNC_REDIS_URL's
    credentials or presents a certificate we do not trust: it would retry forever. Redis down
    is no reason to stop, the process waits for it."""
    try:
        with store.connect_service(settings) as conn:
            conn.ping()
    except redis.AuthenticationError:
        raise  # Exsync.invoke names the setting
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        if isinstance(exc.__cause__, ssl.SSLCertVerificationError):
            click.echo(
                f"exsync: Redis at {_without_password(settings.redis_url)} presented a "
                f"certificate we do not trust ({exc.__cause__.verify_message}): set "
                "EXSYNC_REDIS_CA_FILE to the CA that signed it",
                err=True,
            )
            sys.exit(EXIT_CONFIG)


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=f"{parts.username or ''}:***@{host}").geturl()


@click.group(cls=Exsync, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Keep Coconut appointments and Exchange Online calendars in sync, both ways.

    Configuration comes from EXSYNC_* environment variables (see the README). Exit codes: 0
    done, 1 the command found a problem, 2 bad usage or configuration, 3 Redis unreachable.
    """


# The path without its query (the OAuth callback's query carries the authorization code), the
# status, size and duration, and the request id that ties the line to the app's own lines.
ACCESS_LOG_FORMAT = '%(h)s "%(m)s %(U)s %(H)s" %(s)s %(B)s %(M)sms request_id=%({x-request-id}o)s'


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, help="Port to listen on.")
@click.option("--workers", default=2, show_default=True, help="gunicorn worker processes.")
@click.option("--threads", default=4, show_default=True, help="Threads per gunicorn worker.")
def web(host: str, port: int, workers: int, threads: int) -> None:
    """Serve the receivers, health checks and admin.

    The webhook receivers, /healthz, /readyz, /metrics, the admin pages and API, under
    gunicorn with the gthread worker.
    """
    _redis_accepts(command_settings("coconut_webhook_secret", "secret_key"))
    # Each gunicorn process counts on its own; /metrics sums them from this directory.
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="exsync-metrics-")
    os.execvp(
        sys.executable,
        [
            sys.executable, "-m", "gunicorn",
            "--bind", f"{host}:{port}",
            "--workers", str(workers),
            "--worker-class", "gthread",
            "--threads", str(threads),
            "--timeout", "30",
            "--graceful-timeout", "10",
            "--access-logfile", "-",
            "--access-logformat", ACCESS_LOG_FORMAT,
            "webhooks.app:create_app()",
        ],
    )  # fmt: skip


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Metrics address.")
@click.option("--port", default=9101, show_default=True, help="Metrics port (0: none).")
@click.option("--burst", is_flag=True, help="Stop when the queue is empty.")
def worker(host: str, port: int, burst: bool) -> None:
    """Run one worker: apply changes both ways.

    One RQ worker; run as many as you like. Metrics on --port (0 for none).
    """
    settings = command_settings("tenant_id", "client_id", "coconut_url")
    _redis_accepts(settings)
    from workers.runner import run_worker

    sys.exit(run_worker(settings, host=host, port=port, burst=burst))


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Metrics address.")
@click.option("--port", default=9102, show_default=True, help="Metrics port (0: none).")
def scheduler(host: str, port: int) -> None:
    """Run the scheduler: subscriptions, polls, reconciles.

    Creates and renews Graph subscriptions, polls delegated mailboxes and reconciles both
    sides. Run exactly one.
    """
    settings = command_settings("tenant_id", "client_id", "coconut_url")
    _redis_accepts(settings)
    from subscriptions.scheduler import run_scheduler

    sys.exit(run_scheduler(settings, host=host, port=port))


@main.command(
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    add_help_option=False,
)
@click.argument("service", type=click.Choice(["graph", "coconut"]))
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def emulate(service: str, args: tuple[str, ...]) -> None:
    """Run the Graph or Coconut emulator.

    `exsync emulate graph --help` and `exsync emulate coconut --help` list their options.
    """
    # A separate program reached over HTTP, like the real service: nothing here imports it. It
    # is told the command's name, so its usage and errors say `exsync emulate graph`.
    os.environ["EXSYNC_EMULATOR_PROG_NAME"] = f"exsync emulate {service}"
    os.execvp(sys.executable, [sys.executable, "-m", f"emulators.{service}", *args])


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address for every process.")
@click.option("--port", default=8000, show_default=True, help="Web port; others follow it.")
@click.option("--keep", is_flag=True, help="Keep the work folder (logs, Redis AOF) on exit.")
def demo(host: str, port: int, keep: bool) -> None:
    """Run everything at once, seeded.

    Both emulators, Redis if needed, web, a worker and the scheduler; Ctrl-C stops them. Your
    EXSYNC_* settings reach every process, except those the demo wires itself.
    """
    from exsync.demo import run_demo

    sys.exit(run_demo(host, port, keep))


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(as_json: bool) -> None:
    """Show the connection, queue and staff status.

    The connection, the initial sync, the queue (waiting, oldest, running, failed), the
    subscriptions expiring within a day, mailboxes in error and every staff member's row as on
    the User Accounts tab. Exit 1 when nothing syncs (not connected, disconnected, to
    re-authorize), a staff member or mailbox is in error, Coconut refused an item, or a job
    failed.
    """
    import json
    from dataclasses import asdict

    from core import staff_status
    from core.progress import progress
    from exsync import ops_state

    settings = command_settings()
    conn = store.connect_service(settings)
    link, rows = staff_status.current(conn, settings)
    initial = progress(conn)
    queue = ops_state.queue_state(conn, settings.queue_name)
    subscriptions = ops_state.subscription_state(conn)
    broken = ops_state.mailboxes_in_error(conn)
    counts = staff_status.counts(rows)
    if as_json:
        out = {
            "connection": link.link, "syncing": link.syncing, "access": link.access,
            "connection_detail": f"{link.headline}. {link.detail}",
            "initial_sync": {"state": initial.state, "done": initial.done, "total": initial.total},
            "queue": asdict(queue),
            "subscriptions": asdict(subscriptions),
            "mailboxes_in_error": [asdict(m) for m in broken],
            "counts": {str(k): v for k, v in counts.items()},
            "users": [{**asdict(r), "state": str(r.state)} for r in rows],
        }  # fmt: skip
        click.echo(json.dumps(out, indent=2))
    else:
        click.echo(f"connection: {link.link}   access: {link.access}")
        click.echo(f"  {link.headline}. {link.detail}")
        click.echo(f"initial sync: {initial.state} ({initial.done}/{initial.total} items)")
        click.echo(
            f"queue: {queue.depth} waiting (oldest {queue.oldest_waiting_seconds:.0f} s)   "
            f"running {queue.running}   failed {queue.failed}"
        )
        click.echo(
            f"subscriptions: {subscriptions.total}   expiring within a day "
            f"{subscriptions.expiring_within_a_day}   expired {subscriptions.expired}"
        )
        click.echo(f"mailboxes in error: {len(broken)}")
        for m in broken:
            click.echo(f"  {m.address or m.mailbox:<40} {m.problem}")
        shown = [("syncing", "syncing"), ("warning", "warnings"), ("error", "errors")]
        if counts[staff_status.State.NOT_CONNECTED]:
            shown.append(("not_connected", "not connected"))
        click.echo("   ".join(f"{label} {counts[staff_status.State(s)]}" for s, label in shown))
        for r in rows:
            detail = f"  {r.problem}" if r.problem else ""
            click.echo(
                f"  {r.state:<13} {r.name:<24} {r.mailbox or '-':<32} "
                f"{r.subscription or '-':<8} {r.to_exchange}/{r.to_coconut}{detail}"
            )
            for item in r.refused:
                click.echo(f"      refused: {item.text} (attempt {item.attempts})")
            if r.reconciliation:
                click.echo(f"      {r.reconciliation}")
    refused = any(r.refused for r in rows)
    problem = not link.syncing or counts[staff_status.State.ERROR] or broken or refused
    sys.exit(EXIT_PROBLEM if problem or queue.failed else 0)


@main.command("initial-sync")
@click.option("--status", "status_only", is_flag=True, help="Only show progress.")
def initial_sync(status_only: bool) -> None:
    """Queue the initial sync and show its progress.

    Every staff member, both ways (Authorize queues it too); --status only shows progress.
    """
    from core.progress import progress

    settings = command_settings()
    conn = store.connect_service(settings)
    if not status_only:
        queue = jobs.queue(settings.queue_name, conn)
        jobs.ensure_queued(queue, JobKind.INITIAL_SYNC, "exchange")
        click.echo("initial sync queued")
    now = progress(conn)
    click.echo(f"state: {now.state}   items done: {now.done}/{now.total}")
    for user in now.users:
        click.echo(f"  {user.address or user.staff_id:40} {user.done}/{user.total}")


@main.group()
def failed() -> None:
    """List or requeue jobs that exhausted retries."""


@failed.command("list")
def failed_list() -> None:
    """Show failed jobs and why each failed."""
    from exsync.failed import list_failed

    sys.exit(list_failed(command_settings()))


@failed.command("requeue")
@click.argument("job_ids", nargs=-1)
@click.option("--all", "requeue_all", is_flag=True, help="Requeue every failed job.")
def failed_requeue(job_ids: tuple[str, ...], requeue_all: bool) -> None:
    """Put failed jobs back on the queue.

    Exit 1 when a named id is not a failed job.
    """
    from exsync.failed import requeue_failed

    if bool(job_ids) == requeue_all:
        raise click.UsageError("name job ids or pass --all")
    sys.exit(requeue_failed(command_settings(), list(job_ids), requeue_all))


@main.group()
def admin() -> None:
    """Admin accounts and API tokens."""


@admin.command("add-user")
@click.argument("email")
@click.option("--role", type=click.Choice(["admin", "staff"]), default="admin", show_default=True)
@click.password_option(envvar="EXSYNC_ADMIN_PASSWORD", help="Or set EXSYNC_ADMIN_PASSWORD.")
def admin_add_user(email: str, role: str, password: str) -> None:
    """Create or reset an account.

    Only the admin role reaches settings and the admin API; staff accounts are refused there.
    """
    from core.admin_accounts import AdminUserError, add_user

    settings = command_settings()
    try:
        email = add_user(store.connect_service(settings), email, password, role)
    except AdminUserError as exc:
        raise click.UsageError(str(exc)) from None
    click.echo(f"{role} account {email} saved")


@admin.command("add-token")
@click.argument("name")
def admin_add_token(name: str) -> None:
    """Create an admin API token.

    Printed once; scripts send it as `Authorization: Bearer ...`.
    """
    from core.admin_accounts import AdminUserError, add_token

    settings = command_settings()
    try:
        token = add_token(store.connect_service(settings), name)
    except AdminUserError as exc:
        raise click.UsageError(str(exc)) from None
    click.echo(token)


@admin.command("remove-user")
@click.argument("email")
def admin_remove_user(email: str) -> None:
    """Delete an account and end its sessions."""
    from core.admin_accounts import AdminUserError, remove_user

    settings = command_settings()
    try:
        removed = remove_user(store.connect_service(settings), email)
    except AdminUserError as exc:
        raise click.UsageError(str(exc)) from None
    if not removed:
        click.echo(f"exsync: no account {email}", err=True)
        sys.exit(EXIT_PROBLEM)
    click.echo(f"account {email} removed")


@admin.command("revoke-token")
@click.argument("name")
def admin_revoke_token(name: str) -> None:
    """Revoke an admin API token by name."""
    from core.admin_accounts import revoke_token

    settings = command_settings()
    if not revoke_token(store.connect_service(settings), name):
        click.echo(f"exsync: no token named {name}", err=True)
        sys.exit(EXIT_PROBLEM)
    click.echo(f"token {name} revoked")


main.add_command(resync.resync)
main.add_command(sync_chores.subscriptions)
main.add_command(sync_chores.holds)

if __name__ == "__main__":
    main(prog_name="exsync")
