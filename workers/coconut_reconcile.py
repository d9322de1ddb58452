"""Job `reconcile_coconut`: the safety net for lost Coconut webhooks. Every item changed since
the last check, and every projected item Coconut no longer lists (deleted without a webhook),
goes to its own job."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from core import jobs, store
from core.job_kinds import PROJECTION_JOBS, JobKind
from workers.coconut_items import window_start
from workers.context import WorkerContext, context

log = logging.getLogger(__name__)

# Coconut's updated_at and our clock differ a little; re-reading a few minutes costs nothing.
RECONCILE_OVERLAP = timedelta(minutes=5)


def reconcile_coconut(item: str = "all") -> int:
    ctx = context()
    return jobs.run_coalesced(
        ctx.redis, JobKind.RECONCILE_COCONUT, item, lambda _: _reconcile_round(ctx)
    )


def _reconcile_round(ctx: WorkerContext) -> int:
    checkpoint_key = store.coconut_reconciled_key()
    started = datetime.now(UTC)
    raw = ctx.redis.get(checkpoint_key)
    since = datetime.fromtimestamp(float(raw), UTC) - RECONCILE_OVERLAP if raw else None
    # Appointments and absences number their ids apart: appointment 36 is not absence 36.
    queued: set[tuple[str, str]] = set()
    for appointment in ctx.coconut.appointments(updated_since=since, start_after=window_start(ctx)):
        queued.add(("appointment", str(appointment.id)))
    for absence in ctx.coconut.absences(source="coconut"):
        if since is None or absence.updated_at >= since:
            queued.add(("absence", str(absence.id)))
    for kind in PROJECTION_JOBS:
        queued |= {(kind, item_id) for item_id in _projected_items(ctx, kind)}
    for kind, item_id in sorted(queued):
        jobs.ensure_queued(ctx.queue, PROJECTION_JOBS[kind], item_id)
    ctx.redis.set(checkpoint_key, started.timestamp())
    log.info("reconcile.coconut", extra={"queued": len(queued), "full": since is None})
    return len(queued)


def _projected_items(ctx: WorkerContext, kind: str) -> set[str]:
    prefix = store.projection_key(kind, "")
    return {
        key.decode()[len(prefix) :] for key in ctx.redis.scan_iter(match=prefix + "*", count=500)
    }
