"""Resyncing staff members: their Coconut items and their mailbox go round again through the
same coalesced jobs the webhooks queue (User Accounts' Resync and Recheck, `exsync resync`).

`sync_staff` lists the staff member's appointments and absences in Coconut and queues one job
per item; `sync_mailbox` runs a delta round on their mailbox. Only ids go in: the web process
and the CLI never call Coconut or Graph for this.
"""

from __future__ import annotations

from rq import Queue

from core import jobs
from core.staff_status import StaffRow

SYNC_STAFF = "workers.appointments.sync_staff"
SYNC_MAILBOX = "workers.mailboxes.sync_mailbox"


def queue_resync(queue: Queue, rows: list[StaffRow]) -> list[str]:
    """Make sure each staff member's jobs are queued; returns the job ids to watch."""
    queued = []
    for row in rows:
        queued.append(jobs.ensure_queued(queue, SYNC_STAFF, "staff", row.staff_id))
        if row.user_id:
            queued.append(jobs.ensure_queued(queue, SYNC_MAILBOX, "mailbox", row.user_id))
    return queued
