"""What a job works with: settings, Redis, the queue, one event loop and the two API clients.

msgraph-sdk is async only and a client cannot outlive its event loop, so each worker process
keeps one loop and one Graph client for its whole life (workers run jobs in-process, see
workers.runner). Jobs take ids, call `context()` and read current state themselves.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from functools import cached_property
from typing import Any, TypeVar

import redis
from msgraph import GraphServiceClient
from rq import Queue

from core import audit, connection, jobs, logs, store
from core.coconut.client import CoconutClient
from core.coconut.models import Staff
from core.microsoft import graph_access
from core.microsoft.graph import graph_client
from core.microsoft.throttle import MailboxGate
from core.settings import Settings, load_settings

T = TypeVar("T")
ACCESS_CHECK_SECONDS = 5
# A staff member read from Coconut serves this long, unless a staff round began since.
STAFF_CACHE_SECONDS = 60.0
_ACCESS_FIELDS = ("status", "connected_at", "impersonation", "graph_url", "authority", "client_id")


@dataclass(frozen=True)
class SyncOptions:
    show_event_titles: bool
    sync_past_days: int
    sync_future_days: int
    edit_policy: connection.EditPolicy


class WorkerContext:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.loop = asyncio.new_event_loop()
        self._graph: GraphServiceClient | None = None
        self._graph_access: list[bytes | None] = []
        self._graph_checked = 0.0
        self._staff: dict[int, tuple[float, bytes | None, Staff | None]] = {}

    @cached_property
    def redis(self) -> redis.Redis:
        return store.connect_service(self.settings)

    @cached_property
    def queue(self) -> Queue:
        return jobs.queue(self.settings.queue_name, self.redis)

    @property
    def graph(self) -> GraphServiceClient:
        """The Graph client for the current connection, rebuilt when the admin changes it."""
        now = time.monotonic()
        if self._graph is None or now >= self._graph_checked + ACCESS_CHECK_SECONDS:
            self._graph_checked = now
            access = self.redis.hmget(connection.CONNECTION_KEY, *_ACCESS_FIELDS)
            if self._graph is None or access != self._graph_access:
                self._graph, self._graph_access = self._build_graph(), access
        return self._graph

    def _build_graph(self) -> GraphServiceClient:
        """The client for the credential core.microsoft.graph_access picks (as /readyz does)."""
        access = graph_access.current(self.settings, self.redis)
        logs.redact(access.secret)
        return graph_client(access.endpoint, access.credential)

    @property
    def syncing(self) -> bool:
        """Whether jobs should write anywhere (core.connection.WRITING)."""
        return connection.writing(self.redis)

    @property
    def options(self) -> SyncOptions:
        """The admin's sync choices once a connection is configured, else the environment's."""
        stored = connection.load(self.redis)
        if stored.status == connection.Status.NOT_CONFIGURED:
            s = self.settings
            return SyncOptions(
                s.show_event_titles, s.sync_past_days, s.sync_future_days, s.edit_policy
            )
        return SyncOptions(
            stored.show_event_titles, stored.sync_past_days, stored.sync_future_days,
            stored.edit_policy,
        )  # fmt: skip

    @property
    def impersonation(self) -> bool:
        """App-only access (subscriptions) or the service account's delegated access (polling):
        the admin's choice once a connection is configured, else the environment's."""
        stored = self.redis.hget(connection.CONNECTION_KEY, "impersonation")
        return stored == b"1" if stored is not None else self.settings.impersonation

    @cached_property
    def gate(self) -> MailboxGate:
        s = self.settings
        return MailboxGate(self.redis, s.client_id or "app", s.graph_mailbox_concurrency)

    @cached_property
    def coconut(self) -> CoconutClient:
        s = self.settings
        return CoconutClient(s.coconut_url, s.coconut_client_id, s.coconut_client_secret)

    def staff(self, user_id: int) -> Staff | None:
        """Coconut's staff member, read at most once a minute per process: every appointment
        and mailbox round needs one, and staff change rarely. A staff round (user.updated, a
        resync) moves the epoch first, and queues a round of every item that staff member
        touches after it, so what a round read from a stale copy is read again fresh."""
        epoch = self.redis.get(store.staff_epoch_key())
        now = time.monotonic()
        cached = self._staff.get(user_id)
        if cached is not None and cached[0] > now and cached[1] == epoch:
            return cached[2]
        staff = self.coconut.get_user(user_id)
        if len(self._staff) > 10_000:
            self._staff.clear()
        self._staff[user_id] = (now + STAFF_CACHE_SECONDS, epoch, staff)
        return staff

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on this process's loop (jobs themselves are plain functions)."""
        return self.loop.run_until_complete(coro)


_current: WorkerContext | None = None


def context() -> WorkerContext:
    """The process's context, built from the environment on first use."""
    global _current
    if _current is None:
        _current = WorkerContext(load_settings())
    return _current


def install(ctx: WorkerContext) -> None:
    """Use this context in this process (the worker command builds it from validated settings),
    and publish the process's audit events as its settings say."""
    global _current
    _current = ctx
    audit.configure(ctx.settings)
