"""`exsync failed list|requeue`: the jobs that exhausted their retries, and putting them back."""

from __future__ import annotations

import click
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.registry import FailedJobRegistry

from core import jobs, store
from core.settings import Settings


def _registry(settings: Settings) -> FailedJobRegistry:
    conn = store.connect_service(settings)
    return FailedJobRegistry(queue=jobs.queue(settings.queue_name, conn))


def list_failed(settings: Settings) -> int:
    registry = _registry(settings)
    ids = registry.get_job_ids()
    if not ids:
        click.echo("no failed jobs")
        return 0
    for job in jobs.fetch_many(ids, registry.connection):
        if job is None:
            continue
        reason = (job.latest_result().exc_string if job.latest_result() else "") or ""
        last_line = reason.strip().splitlines()[-1] if reason.strip() else "unknown"
        ended = job.ended_at.isoformat(timespec="seconds") if job.ended_at else "-"
        click.echo(f"{job.id}\t{job.func_name}\t{ended}\t{last_line}")
    return 0


def requeue_failed(settings: Settings, job_ids: list[str], requeue_all: bool) -> int:
    registry = _registry(settings)
    targets = registry.get_job_ids() if requeue_all else job_ids
    problems = 0
    for job_id in targets:
        try:
            registry.requeue(job_id)
            click.echo(f"requeued {job_id}")
        except (NoSuchJobError, InvalidJobOperation):
            click.echo(f"not a failed job: {job_id}", err=True)
            problems += 1
    return 1 if problems else 0
