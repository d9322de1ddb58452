"""`exsync`: one command for every process of the service and for the chores of running it.

Exit codes scripts can rely on: 0 done, 1 the chore ran and found a problem, 2 bad usage or
configuration (the message names the setting), 3 a dependency (Redis) is unreachable.
"""

from __future__ import annotations

import os
import sys
import tempfile

import click
import redis

from core import jobs, logs, store
from core.settings import Settings, SettingsError, load_settings
from exsync import sync_chores

EXIT_PROBLEM = 1
EXIT_CONFIG = 2
EXIT_UNREACHABLE = 3


def _settings(*required: str) -> Settings:
    try:
        settings = load_settings().require(*required)
    except SettingsError as exc:
        click.echo(f"exsync: {exc}", err=True)
        sys.exit(EXIT_CONFIG)
    logs.configure(settings.log_level, settings.log_format)
    jobs.configure(settings.job_retries, settings.job_timeout)
    return settings


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Keep Coconut appointments and Exchange Online calendars in sync, both ways.

    Configuration comes from EXSYNC_* environment variables (see the README).
    """


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, help="Port to listen on.")
@click.option("--workers", default=2, show_default=True, help="gunicorn worker processes.")
@click.option("--threads", default=4, show_default=True, help="Threads per gunicorn worker.")
def web(host: str, port: int, workers: int, threads: int) -> None:
    """Serve the webhook receivers, health checks and admin pages (gunicorn)."""
    _settings("coconut_webhook_secret", "secret_key")
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
            "webhooks.app:create_app()",
        ],
    )  # fmt: skip


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Metrics address.")
@click.option("--port", default=9101, show_default=True, help="Metrics port (0: none).")
@click.option("--burst", is_flag=True, help="Stop when the queue is empty.")
def worker(host: str, port: int, burst: bool) -> None:
    """Run one RQ worker that applies changes to the opposite calendar."""
    settings = _settings("tenant_id", "client_id", "coconut_url")
    from workers.runner import run_worker

    sys.exit(run_worker(settings, host=host, port=port, burst=burst))


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Metrics address.")
@click.option("--port", default=9102, show_default=True, help="Metrics port (0: none).")
def scheduler(host: str, port: int) -> None:
    """Create and renew Graph subscriptions, poll delegated mailboxes, reconcile."""
    settings = _settings("tenant_id", "client_id", "coconut_url")
    from subscriptions.scheduler import run_scheduler

    sys.exit(run_scheduler(settings, host=host, port=port))


@main.command(
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    add_help_option=False,
)
@click.argument("service", type=click.Choice(["graph", "coconut"]))
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def emulate(service: str, args: tuple[str, ...]) -> None:
    """Run a local emulator of Microsoft Graph or Coconut (`exsync emulate graph --help`)."""
    # A separate program reached over HTTP, like the real service: nothing here imports it.
    os.execvp(sys.executable, [sys.executable, "-m", f"emulators.{service}", *args])


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address for every process.")
@click.option("--port", default=8000, show_default=True, help="Web port; others follow it.")
def demo(host: str, port: int) -> None:
    """Start both emulators, Redis if needed, web, a worker and the scheduler, seeded."""
    from exsync.demo import run_demo

    sys.exit(run_demo(host, port))


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(as_json: bool) -> None:
    """The connection, the initial sync and every staff member's sync status."""
    import json
    from dataclasses import asdict

    from core import connection, staff_status
    from core.progress import progress

    settings = _settings()
    conn = store.connect(settings.redis_url)
    try:
        stored = connection.load(conn)
        configured = stored.status != connection.Status.NOT_CONFIGURED
        polling = not (stored.impersonation if configured else settings.impersonation)
        rows = staff_status.rows(conn, polling=polling)
        initial = progress(conn)
    except redis.ConnectionError as exc:
        click.echo(f"exsync: Redis unreachable at {settings.redis_url}: {exc}", err=True)
        sys.exit(EXIT_UNREACHABLE)
    counts = staff_status.counts(rows)
    access = "polling" if polling else "subscriptions"
    if as_json:
        out = {
            "connection": stored.status, "access": access,
            "initial_sync": {"state": initial.state, "done": initial.done, "total": initial.total},
            "counts": {str(k): v for k, v in counts.items()},
            "users": [{**asdict(r), "state": str(r.state)} for r in rows],
        }  # fmt: skip
        click.echo(json.dumps(out, indent=2))
    else:
        click.echo(
            f"connection: {stored.status}   access: {'polling' if polling else 'subscriptions'}"
        )
        click.echo(f"initial sync: {initial.state} ({initial.done}/{initial.total} items)")
        click.echo(
            f"syncing {counts[staff_status.State.SYNCING]}   warnings "
            f"{counts[staff_status.State.WARNING]}   errors {counts[staff_status.State.ERROR]}"
        )
        for r in rows:
            detail = f"  {r.problem}" if r.problem else ""
            click.echo(
                f"  {r.state:<10} {r.name:<24} {r.mailbox or '-':<32} "
                f"{r.subscription or '-':<8} {r.to_exchange}/{r.to_coconut}{detail}"
            )
    sys.exit(EXIT_PROBLEM if counts[staff_status.State.ERROR] else 0)


@main.command("initial-sync")
@click.option("--status", "status_only", is_flag=True, help="Only show progress.")
def initial_sync(status_only: bool) -> None:
    """Queue the initial sync (every staff member, both ways) and show its progress."""
    from rq import Queue

    from core.progress import progress

    settings = _settings()
    conn = store.connect(settings.redis_url)
    try:
        if not status_only:
            queue = Queue(settings.queue_name, connection=conn)
            jobs.ensure_queued(
                queue, "workers.initial_sync.run_initial_sync", "initial_sync", "exchange"
            )
            click.echo("initial sync queued")
        now = progress(conn)
    except redis.ConnectionError as exc:
        click.echo(f"exsync: Redis unreachable at {settings.redis_url}: {exc}", err=True)
        sys.exit(EXIT_UNREACHABLE)
    click.echo(f"state: {now.state}   items done: {now.done}/{now.total}")
    for user in now.users:
        click.echo(f"  {user.address or user.staff_id:40} {user.done}/{user.total}")


@main.group()
def failed() -> None:
    """Jobs that exhausted their retries."""


@failed.command("list")
def failed_list() -> None:
    """Show failed jobs with the reason each failed."""
    from exsync.failed import list_failed

    settings = _settings()
    try:
        sys.exit(list_failed(settings))
    except redis.ConnectionError as exc:
        click.echo(f"exsync: Redis unreachable at {settings.redis_url}: {exc}", err=True)
        sys.exit(EXIT_UNREACHABLE)


@failed.command("requeue")
@click.argument("job_ids", nargs=-1)
@click.option("--all", "requeue_all", is_flag=True, help="Requeue every failed job.")
def failed_requeue(job_ids: tuple[str, ...], requeue_all: bool) -> None:
    """Put failed jobs back on the queue."""
    from exsync.failed import requeue_failed

    if not job_ids and not requeue_all:
        raise click.UsageError("name job ids or pass --all")
    settings = _settings()
    try:
        sys.exit(requeue_failed(settings, list(job_ids), requeue_all))
    except redis.ConnectionError as exc:
        click.echo(f"exsync: Redis unreachable at {settings.redis_url}: {exc}", err=True)
        sys.exit(EXIT_UNREACHABLE)


@main.group()
def admin() -> None:
    """Accounts that may sign in to the admin pages, and API tokens for scripts."""


@admin.command("add-user")
@click.argument("email")
@click.option("--role", type=click.Choice(["admin", "staff"]), default="admin", show_default=True)
@click.password_option(envvar="EXSYNC_ADMIN_PASSWORD", help="Or set EXSYNC_ADMIN_PASSWORD.")
def admin_add_user(email: str, role: str, password: str) -> None:
    """Create (or reset) an account; only the admin role reaches settings."""
    from exsync.admin_users import AdminUserError, add_user

    settings = _settings()
    try:
        email = add_user(store.connect(settings.redis_url), email, password, role)
    except AdminUserError as exc:
        raise click.UsageError(str(exc)) from None
    except redis.ConnectionError as exc:
        click.echo(f"exsync: Redis unreachable at {settings.redis_url}: {exc}", err=True)
        sys.exit(EXIT_UNREACHABLE)
    click.echo(f"{role} account {email} saved")


@admin.command("add-token")
@click.argument("name")
def admin_add_token(name: str) -> None:
    """Create an admin API token (printed once; send it as `Authorization: Bearer ...`)."""
    from exsync.admin_users import AdminUserError, add_token

    settings = _settings()
    try:
        token = add_token(store.connect(settings.redis_url), name)
    except AdminUserError as exc:
        raise click.UsageError(str(exc)) from None
    except redis.ConnectionError as exc:
        click.echo(f"exsync: Redis unreachable at {settings.redis_url}: {exc}", err=True)
        sys.exit(EXIT_UNREACHABLE)
    click.echo(token)


@admin.command("remove-user")
@click.argument("email")
def admin_remove_user(email: str) -> None:
    """Delete an account; its sessions end on their next request."""
    from exsync.admin_users import AdminUserError, remove_user

    settings = _settings()
    try:
        removed = remove_user(store.connect(settings.redis_url), email)
    except AdminUserError as exc:
        raise click.UsageError(str(exc)) from None
    except redis.ConnectionError as exc:
        click.echo(f"exsync: Redis unreachable at {settings.redis_url}: {exc}", err=True)
        sys.exit(EXIT_UNREACHABLE)
    if not removed:
        click.echo(f"exsync: no account {email}", err=True)
        sys.exit(EXIT_PROBLEM)
    click.echo(f"account {email} removed")


@admin.command("revoke-token")
@click.argument("name")
def admin_revoke_token(name: str) -> None:
    """Revoke an admin API token by its name."""
    from exsync.admin_users import revoke_token

    settings = _settings()
    try:
        revoked = revoke_token(store.connect(settings.redis_url), name)
    except redis.ConnectionError as exc:
        click.echo(f"exsync: Redis unreachable at {settings.redis_url}: {exc}", err=True)
        sys.exit(EXIT_UNREACHABLE)
    if not revoked:
        click.echo(f"exsync: no token named {name}", err=True)
        sys.exit(EXIT_PROBLEM)
    click.echo(f"token {name} revoked")


if __name__ == "__main__":
    main()


main.add_command(sync_chores.subscriptions)
main.add_command(sync_chores.holds)
