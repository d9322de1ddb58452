"""Every job the service queues, by name: the function RQ imports and the item kind it coalesces.

Receivers, the scheduler, the CLI and the admin pages queue jobs by dotted path so that a web
process never imports the workers (and with them the Graph and Coconut clients). The paths are
written here and nowhere else; tests/test_job_kinds.py imports every one, and every end-to-end
test checks that each job it saw queued names a kind listed here.

The kind is the coalescing namespace (core.jobs): one job per (kind, item) waits at a time, and
the item's dirty flag, lock and lag clock are keyed by it. The subscription jobs share the kind
"subscription", so one subscription has one job in flight whatever asked for it.
"""

from __future__ import annotations

from enum import Enum


class JobKind(Enum):
    # Outlook -> Coconut: one staff mailbox's delta round (busy time), and forgetting a mailbox.
    SYNC_MAILBOX = ("workers.mailbox_sync.sync_mailbox", "mailbox")
    FORGET_MAILBOX = ("workers.mailbox_forget.forget_mailbox", "forget")
    RELEASE_HOLDS = ("workers.held_release.release_holds", "release")
    # Coconut -> Outlook: one appointment or absence, every item of a staff member, all of them.
    SYNC_APPOINTMENT = ("workers.item_sync.sync_appointment", "appointment")
    SYNC_ABSENCE = ("workers.item_sync.sync_absence", "absence")
    SYNC_STAFF = ("workers.staff_sync.sync_staff", "staff")
    SYNC_STAFF_MAILBOX = ("workers.staff_sync.sync_staff_mailbox", "staff_mailbox")
    PROJECT_STAFF = ("workers.staff_projection.project_staff", "staff_items")
    RECONCILE_COCONUT = ("workers.coconut_reconcile.reconcile_coconut", "coconut")
    # The connection: the sync after Authorize, and Disconnect.
    INITIAL_SYNC = ("workers.initial_sync.run_initial_sync", "initial_sync")
    DISCONNECT = ("workers.disconnect.run_disconnect", "disconnect")
    # Graph subscriptions (subscriptions.jobs).
    REGISTER_SUBSCRIPTIONS = ("subscriptions.jobs.register", "register")
    RECONCILE_SUBSCRIPTIONS = ("subscriptions.jobs.reconcile_subscriptions", "subscriptions")
    RENEW_SUBSCRIPTION = ("subscriptions.jobs.renew_subscription", "subscription")
    REAUTHORIZE_SUBSCRIPTION = ("subscriptions.jobs.reauthorize_subscription", "subscription")
    RECREATE_SUBSCRIPTION = ("subscriptions.jobs.recreate_subscription", "subscription")
    DELETE_SUBSCRIPTION = ("subscriptions.jobs.delete_subscription", "subscription")

    def __init__(self, path: str, kind: str) -> None:
        self.path = path
        self.kind = kind

    @classmethod
    def of_path(cls, path: str) -> JobKind | None:
        """The registered job RQ would run for this dotted path, None for an unknown one."""
        return _BY_PATH.get(path)


_BY_PATH = {job.path: job for job in JobKind}

# The job that projects one Coconut item, by the kind its projection and mark carry.
PROJECTION_JOBS = {"appointment": JobKind.SYNC_APPOINTMENT, "absence": JobKind.SYNC_ABSENCE}
