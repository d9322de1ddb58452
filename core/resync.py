"""Resyncing staff members: their Coconut items and their mailbox go round again through the
same coalesced jobs the webhooks queue (User Accounts' Resync and Recheck, `exsync resync`).

A resync is a full reconciliation (core.reconcile): `sync_staff` re-matches the staff member's
mailbox and queues one job per appointment and absence of theirs, `project_staff` compares
every one of them with our marked events in the mailbox, and the mailbox's next round reads
its whole window fresh and compares it with every busy block Coconut holds for them. Only ids
go in: the web process and the CLI never call Coconut or Graph for this.
"""

from __future__ import annotations

from rq import Queue

from core import jobs, reconcile
from core.job_kinds import JobKind
from core.staff_status import StaffRow


def queue_resync(queue: Queue, rows: list[StaffRow]) -> list[str]:
    """Make sure each staff member's jobs are queued; returns the job ids to watch."""
    queued = []
    for row in rows:
        queued.append(jobs.ensure_queued(queue, JobKind.SYNC_STAFF, row.staff_id))
        queued += reconcile.request(queue, row.staff_id, row.user_id, "resync")
    return queued
