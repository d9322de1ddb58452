"""The coalescing flag protocol (core.jobs) under every interleaving hypothesis can think of:
changes before a job starts, during any of its rounds, and rounds that die half-way. Whatever
happens, every change is read by a round that started after it, and no round runs for nothing
more than once per change. Real Redis, real RQ queue and worker (in-process, burst mode)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rq import Queue
from rq.registry import FailedJobRegistry, ScheduledJobRegistry

from core import jobs, store
from workers.runner import PromptWorker


class Probe(NamedTuple):
    """A job of this module's own, queued and coalesced as the service's are (core.jobs.Queued)."""

    path: str
    kind: str


PROBE = Probe("tests.test_coalescing_protocol.probe", "probe")


@dataclass
class Script:
    """What happens to one item: changes arriving during each round, and rounds that die."""

    conn: redis.Redis
    queue: Queue
    item: str
    during: list[int]
    dies: set[int]
    changes: int = 0
    rounds: list[tuple[int, bool]] = field(default_factory=list)  # (changes seen, completed)

    def change(self) -> None:
        self.changes += 1
        jobs.ensure_queued(self.queue, PROBE, self.item)

    def round(self) -> None:
        seen, number = self.changes, len(self.rounds)
        self.rounds.append((seen, False))
        for _ in range(self.during[number] if number < len(self.during) else 0):
            self.change()
        if number in self.dies:
            raise RuntimeError("the worker died half-way through this round")
        self.rounds[number] = (seen, True)


SCRIPT: Script | None = None


def probe(item: str) -> int:
    """The job: one coalesced run of the current script's rounds."""
    assert SCRIPT is not None and SCRIPT.item == item
    return jobs.run_coalesced(SCRIPT.conn, PROBE, item, lambda _: SCRIPT.round())


# Each example runs real jobs on a real worker: fewer examples than hypothesis's default, no
# deadline, and one Redis-backed queue fixture shared by the examples.
PROPERTY = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@pytest.fixture
def queue(redis_url: str) -> Iterator[Queue]:
    conn = redis.Redis.from_url(redis_url)
    jobs.configure(retries=3, timeout=30)
    yield jobs.queue("probe", conn)
    conn.close()


@PROPERTY
@given(
    before=st.integers(1, 5),
    during=st.lists(st.integers(0, 4), max_size=8),
    dies=st.sets(st.integers(0, 7), max_size=2),
)
def test_every_change_is_read_by_a_round_that_started_after_it(
    queue: Queue, before: int, during: list[int], dies: set[int]
) -> None:
    global SCRIPT
    script = Script(queue.connection, queue, uuid.uuid4().hex, during, dies)
    SCRIPT = script
    for _ in range(before):
        script.change()
    worker = PromptWorker([queue], connection=queue.connection, serializer=jobs.SERIALIZER)
    scheduled = ScheduledJobRegistry(queue=queue)
    for _ in range(20):
        worker.work(burst=True)
        # Time passes: a retry waiting for its back-off (core.jobs.RETRY_INTERVALS) is due.
        for job_id in scheduled.get_job_ids():
            scheduled.remove(job_id)
            queue.enqueue_job(jobs.fetch(job_id, queue.connection))
        if not queue.count:
            break

    completed = [seen for seen, done in script.rounds if done]
    assert completed and completed[-1] == script.changes, script.rounds
    assert not queue.connection.exists(store.dirty_key("probe", script.item))
    assert queue.count == 0
    assert not FailedJobRegistry(queue=queue).get_job_ids()
    # Coalescing: never more rounds than changes plus the rounds that had to be redone.
    assert len(script.rounds) <= script.changes + len(dies)


# ------------------------------------------------- hints that say which version they announce


@dataclass
class VersionedScript:
    """An appointment whose webhooks name its version: each change makes a new version and
    its hint; `echoes` re-announce, during a round, the version that round read (Coconut's
    second webhook of a reschedule, or a retried delivery); `blind` hints name no version."""

    conn: redis.Redis
    queue: Queue
    item: str
    during: list[int]
    echoes: list[int]
    blind: list[int]
    version: int = 0
    rounds: list[int] = field(default_factory=list)  # the version each round read

    def change(self, announce: bool = True) -> None:
        self.version += 1
        self.hint(self.version if announce else None)

    def hint(self, version: int | None) -> None:
        jobs.ensure_queued(self.queue, VERSIONED_PROBE, self.item, version=version)

    def round(self) -> int:
        read, number = self.version, len(self.rounds)
        self.rounds.append(read)
        for _ in range(_at(self.echoes, number)):
            self.hint(read)
        for _ in range(_at(self.during, number)):
            self.change()
        for _ in range(_at(self.blind, number)):
            self.change(announce=False)
        return read


def _at(values: list[int], index: int) -> int:
    return values[index] if index < len(values) else 0


VERSIONED: VersionedScript | None = None
# "appointment": a kind whose hints name the version they announce (core.jobs.VERSIONED_KINDS).
VERSIONED_PROBE = Probe("tests.test_coalescing_protocol.versioned_probe", "appointment")


def versioned_probe(item: str) -> int:
    assert VERSIONED is not None and VERSIONED.item == item
    return jobs.run_coalesced(VERSIONED.conn, VERSIONED_PROBE, item, lambda _: VERSIONED.round())


def _drain(queue: Queue) -> None:
    worker = PromptWorker([queue], connection=queue.connection, serializer=jobs.SERIALIZER)
    for _ in range(20):
        worker.work(burst=True)
        if not queue.count:
            return


@PROPERTY
@given(
    before=st.integers(1, 3),
    during=st.lists(st.integers(0, 2), max_size=4),
    echoes=st.lists(st.integers(0, 3), max_size=4),
    blind=st.lists(st.integers(0, 1), max_size=4),
)
def test_a_hint_of_a_version_already_read_costs_no_round(
    queue: Queue, before: int, during: list[int], echoes: list[int], blind: list[int]
) -> None:
    global VERSIONED
    script = VersionedScript(queue.connection, queue, uuid.uuid4().hex, during, echoes, blind)
    VERSIONED = script
    for _ in range(before):
        script.change()
    _drain(queue)

    assert script.rounds and script.rounds[-1] == script.version, script.rounds
    assert not queue.connection.exists(store.dirty_key("appointment", script.item))
    assert queue.connection.zscore(store.announced_key("appointment"), script.item) is None
    # Only new versions earn a round: the echoes, however many, never do.
    with_news = sum(1 for n, _ in enumerate(script.rounds) if _at(during, n) + _at(blind, n))
    assert len(script.rounds) == 1 + with_news, script.rounds
