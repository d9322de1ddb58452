"""`exsync resync USER|--all`: queue staff members' resync and watch it until it is done.

A resync is a full reconciliation (core.reconcile): once its jobs are done, each staff
member's line says what it repaired, or names the items Coconut refused. The jobs are the
webhooks' own (core.resync), so a resync coalesces with whatever is already queued for the
same items. What the command waits for: the jobs it queued, and the jobs those
start while they run (the staff member's mailbox match, each of their appointments and
absences; seen as they appear in the queue). A job whose hash is gone finished (results are
not kept); one in `failed` exhausted its retries.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable

import click
import redis
from rq import Queue, Worker
from rq.job import Job
from rq.registry import ScheduledJobRegistry, StartedJobRegistry

from core import jobs, reconcile, refusals, staff_status, store
from core.staff_status import StaffRow
from exsync.command import EXIT_PROBLEM, command_settings

PENDING = {b"queued", b"started", b"deferred", b"scheduled"}
FAILED = {b"failed", b"stopped", b"canceled"}
POLL_SECONDS = 0.25
# Jobs a staff member's resync starts, by the kind of job that starts them.
PARENTS = ("staff-", "staff_mailbox-")
ANY_ITEM = ("appointment-", "absence-")


@click.command()
@click.argument("user", required=False)
@click.option("--all", "every", is_flag=True, help="Every staff member on the roster.")
@click.option("--no-wait", is_flag=True, help="Queue the jobs and return at once.")
@click.option(
    "--timeout", default=600, show_default=True, type=click.IntRange(min=1),
    help="Seconds to wait for the jobs before giving up (exit 1).",
)  # fmt: skip
def resync(user: str | None, every: bool, no_wait: bool, timeout: int) -> None:
    """Resync a staff member, or --all.

    USER is the staff member's email, Coconut staff id or Graph user id. Their appointments,
    absences and mailbox go round again through the webhooks' own jobs; a progress bar runs
    until those jobs are done. Exit 0 done, 1 a job failed or the wait timed out, 2 unknown
    user, 3 Redis unreachable.
    """
    if bool(user) == every:
        raise click.UsageError("name one staff member (email, staff id or Graph user id) or --all")
    settings = command_settings()
    conn = store.connect_service(settings)
    rows = staff_status.rows(conn, polling=False)
    if every and not rows:
        click.echo("exsync: no staff members known yet; run `exsync initial-sync` first", err=True)
        sys.exit(EXIT_PROBLEM)
    chosen = rows if every else _matching(rows, user or "")
    queue = jobs.queue(settings.queue_name, conn)
    watch = Watch(conn, queue, chosen, reconcile.resync(queue, chosen))
    if no_wait:
        click.echo(f"queued {len(watch.jobs)} job(s) for {len(chosen)} staff member(s)")
        return
    label = f"resync {len(chosen)} staff member(s)"
    deadline = time.monotonic() + timeout
    with click.progressbar(length=len(watch.jobs), label=label, show_pos=True) as bar:
        while not watch.step():
            bar.length = len(watch.jobs)
            bar.update(len(watch.finished) - bar.pos)
            if time.monotonic() > deadline:
                break
            time.sleep(POLL_SECONDS)
        bar.length = len(watch.jobs)
        bar.update(len(watch.finished) - bar.pos)
    stuck = _repaired(conn, chosen)
    _report(watch, timeout, stuck)


def _matching(rows: list[StaffRow], who: str) -> list[StaffRow]:
    wanted = who.strip().lower()
    found = [
        row for row in rows
        if wanted in (row.staff_id, row.email.lower(), row.mailbox.lower(), row.user_id.lower())
    ]  # fmt: skip
    if not found:
        raise click.BadParameter(
            f"no staff member on the roster ({len(rows)} listed by `exsync status`) has "
            f"{who!r} as email, Coconut staff id or Graph user id",
            param_hint="USER",
        )
    return found


def _report(watch: Watch, timeout: int, stuck: bool) -> None:
    done, failed = len(watch.finished), sorted(watch.failed)
    waiting = sorted(watch.jobs - watch.finished)
    if waiting:
        workers = Worker.count(connection=watch.conn)
        why = "no worker is running" if not workers else f"{workers} worker(s) busy"
        click.echo(
            f"exsync: {len(waiting)} job(s) still waiting after {timeout} s ({why}): "
            f"{', '.join(waiting[:5])}",
            err=True,
        )
    if failed:
        click.echo(f"exsync: {len(failed)} job(s) failed: {', '.join(failed)}", err=True)
        click.echo("see `exsync failed list`; `exsync failed requeue` retries them", err=True)
    if waiting or failed or stuck:
        sys.exit(EXIT_PROBLEM)
    click.echo(f"resync done: {done} job(s)")


def _repaired(conn: redis.Redis, rows: list[StaffRow]) -> bool:
    """Each mailbox's full reconciliation: what it repaired, and the items Coconut still
    refuses, named (True when there are any: the resync did not bring everything across)."""
    stuck = False
    for row in rows:
        if not row.user_id:
            continue
        where = row.mailbox or row.user_id
        last = reconcile.last(conn, row.user_id)
        if last.at:
            click.echo(f"  {where}: {last.repaired.text}")
        for refusal in refusals.refused(conn, row.user_id):
            stuck = True
            tried = f"tried {refusal.attempts} time(s), retried on its own"
            click.echo(f"exsync: {where}: {refusal.text} ({tried})", err=True)
    return stuck


class Watch:
    """The resync's jobs and the ones they start, and which of them are done."""

    def __init__(self, conn: redis.Redis, queue: Queue, rows: list[StaffRow], queued: list[str]):
        self.conn = conn
        self.queue = queue
        self.jobs: set[str] = set(queued)
        self.finished: set[str] = set()
        self.failed: set[str] = set()
        staff = [row.staff_id for row in rows]
        mailboxes = [row.user_id for row in rows if row.user_id]
        self.children = tuple(f"staff_mailbox-{s}" for s in staff) + tuple(
            f"mailbox-{m}" for m in mailboxes
        )

    def step(self) -> bool:
        """Look once; True when every job seen is done."""
        discovering = any(j.startswith(PARENTS) for j in self.jobs - self.finished)
        self._settle()
        if discovering:
            # Look for new jobs after settling: a parent that just finished queued its last
            # children before it did, so they are in the queue now.
            self.jobs |= {j for j in self._pending_ids() if self._is_child(j)}
            self._settle()
        return self.finished == self.jobs

    def _settle(self) -> None:
        open_ = sorted(self.jobs - self.finished)
        pipe = self.conn.pipeline(transaction=False)
        for job_id in open_:
            pipe.hget(Job.key_for(job_id), "status")
        for job_id, status in zip(open_, pipe.execute(), strict=True):
            if status in PENDING:
                continue
            self.finished.add(job_id)
            if status in FAILED:
                self.failed.add(job_id)

    def _pending_ids(self) -> Iterable[str]:
        yield from self.queue.get_job_ids()
        # cleanup=False: a watcher only looks (cleaning abandoned jobs is the workers' chore).
        yield from StartedJobRegistry(queue=self.queue).get_job_ids(cleanup=False)
        yield from ScheduledJobRegistry(queue=self.queue).get_job_ids(cleanup=False)

    def _is_child(self, job_id: str) -> bool:
        base = job_id.removesuffix("-followup")
        return base.startswith(ANY_ITEM) or base in self.children
