"""The item lock: held for as long as a job runs, gone soon after its worker dies."""

from __future__ import annotations

import time

import pytest
import redis

from core import jobs


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
