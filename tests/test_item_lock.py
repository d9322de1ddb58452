"""The item lock: held for as long as a job runs, gone soon after its worker dies."""

from __future__ import annotations

import time

import pytest
import redis

from core import jobs
from tests.test_coalescing_protocol import PROBE


def test_a_held_lock_outlives_its_ttl_and_is_released_after(
    redis_conn: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(jobs, "LOCK_SECONDS", 1.0)
    with jobs.item_lock(redis_conn, "mailbox", "m1"):
        time.sleep(2.5)  # a long round: the keeper thread renews it meanwhile
        assert redis_conn.pttl("exsync:lock:mailbox:m1") > 0
    assert not redis_conn.exists("exsync:lock:mailbox:m1")


def test_a_dead_workers_lock_expires_on_its_own(
    redis_conn: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(jobs, "LOCK_SECONDS", 1.0)
    orphan = redis_conn.lock("exsync:lock:mailbox:m2", timeout=1.0)
    assert orphan.acquire()  # taken and never renewed, as by a SIGKILLed worker
    started = time.monotonic()
    with jobs.item_lock(redis_conn, "mailbox", "m2"):
        assert 0.5 < time.monotonic() - started < 2.5


def test_a_job_that_finds_a_live_coalesced_run_leaves_its_change_to_that_run(
    redis_conn: redis.Redis,
) -> None:
    """The second worker does not wait out the first one's rounds (it would sit idle while
    other items queue); the first one reads the change before it lets go of the item."""
    item = f"busy-{time.monotonic_ns()}"
    reads: list[int] = []
    second: list[tuple[int, float]] = []

    def change() -> None:
        redis_conn.incr(f"exsync:dirty:probe:{item}")

    def first_round(_: object) -> None:
        reads.append(int(redis_conn.get(f"exsync:dirty:probe:{item}") or 0))
        if len(reads) == 1:
            change()  # a change lands mid-round, and another worker takes its job
            began = time.monotonic()
            rounds = jobs.run_coalesced(redis_conn, PROBE, item, lambda _: reads.append(-1))
            second.append((rounds, time.monotonic() - began))

    change()
    assert jobs.run_coalesced(redis_conn, PROBE, item, first_round) == 2
    assert second and second[0][0] == 0 and second[0][1] < 1.0, second
    assert reads == [1, 2]  # the first run read the change itself, in a second round
    assert not redis_conn.exists(f"exsync:dirty:probe:{item}", f"exsync:lock:probe:{item}")


def test_a_job_waits_for_a_coalesced_holder_that_stopped_renewing(
    redis_conn: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A holder whose lock has missed a renewal may be dead: its change is this job's."""
    monkeypatch.setattr(jobs, "LOCK_SECONDS", 2.0)
    monkeypatch.setattr(jobs, "LIVE_TTL_MS", 1000)
    item = f"dead-{time.monotonic_ns()}"
    redis_conn.set(f"exsync:lock:probe:{item}", "coalesced:dead", px=900)  # missed a renewal
    redis_conn.incr(f"exsync:dirty:probe:{item}")
    began = time.monotonic()
    assert jobs.run_coalesced(redis_conn, PROBE, item, lambda _: None) == 1
    assert 0.7 < time.monotonic() - began < 3.0
