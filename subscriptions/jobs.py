"""RQ jobs around subscriptions: what the lifecycle receiver, the scheduler and the admin queue.

Each takes an id (a subscription's, a mailbox's, or "all") and does its work through
subscriptions.manager; the web process queues them by dotted path and never calls Graph.

The four jobs on one subscription coalesce as one item (core.job_kinds: kind "subscription"), so
whichever waits runs for all that were asked: a waiting renewal or reauthorization stands for a
recreate that a `subscriptionRemoved` asked for. None loses it: each meets Graph's 404 for the
removed subscription and recreates it (manager.renew, manager.reauthorize, even when a recent
reauthorization lets the notice off with a read), and a waiting delete was the admin's word.
A mailbox that another deployment's subscription holds (Graph's 409) fails no job: the
conflict is on the mailbox's row, and the next reconciliation tries again.
"""

from __future__ import annotations

from collections.abc import Callable

from core import jobs
from core.job_kinds import JobKind
from subscriptions import manager
from workers import directory
from workers.context import WorkerContext, context


def reauthorize_subscription(subscription_id: str) -> None:
    """Lifecycle `reauthorizationRequired`."""
    _on_subscription(JobKind.REAUTHORIZE_SUBSCRIPTION, subscription_id, manager.reauthorize)


def recreate_subscription(subscription_id: str) -> None:
    """Lifecycle `subscriptionRemoved`: a new subscription, and the mailbox resynced."""
    _on_subscription(JobKind.RECREATE_SUBSCRIPTION, subscription_id, manager.recreate)


def renew_subscription(subscription_id: str) -> None:
    """The scheduler's renewal before expiry."""
    _on_subscription(JobKind.RENEW_SUBSCRIPTION, subscription_id, manager.renew)


def delete_subscription(subscription_id: str) -> None:
    """The admin removed it."""
    _on_subscription(JobKind.DELETE_SUBSCRIPTION, subscription_id, manager.delete)


def _on_subscription(
    job: JobKind, subscription_id: str, action: Callable[[WorkerContext, str], object]
) -> None:
    ctx = context()
    jobs.run_coalesced(ctx.redis, job, subscription_id, lambda _: action(ctx, subscription_id))


def reconcile_subscriptions(_item: str = "all") -> None:
    ctx = context()
    jobs.run_coalesced(
        ctx.redis, JobKind.RECONCILE_SUBSCRIPTIONS, "all", lambda _: manager.reconcile(ctx)
    )


def register(target: str) -> None:
    """The admin asked for subscriptions: `all`, or one staff member (Coconut id or email)."""
    ctx = context()

    def one_round() -> None:
        if target == "all":
            manager.reconcile(ctx)
            return
        for staff, mailbox in directory.staff_mailboxes(ctx):
            if target in (str(staff.id), staff.email.lower(), mailbox.address):
                manager.subscribe(ctx, mailbox.user_id)

    jobs.run_coalesced(ctx.redis, JobKind.REGISTER_SUBSCRIPTIONS, target, lambda _: one_round())
