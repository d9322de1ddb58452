"""Shared fixtures: a real Redis (its own database, flushed before and after) and the system."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from rq.job import Job

from core.job_kinds import JobKind
from tests.harness import System


def _test_redis_url() -> str:
    """Database 15 (or EXSYNC_TEST_REDIS_URL's); under pytest-xdist each worker counts down
    from it, so parallel tests never flush each other's data."""
    url = os.environ.get("EXSYNC_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")  # gw0, gw1, ...
    if not worker:
        return url
    base, _, db = url.rpartition("/")
    return f"{base}/{int(db) - int(worker.removeprefix('gw'))}"


TEST_REDIS_URL = _test_redis_url()


@pytest.fixture
def redis_url() -> Iterator[str]:
    """The test database, empty. A missing Redis fails the test: it never skips."""
    conn = redis.Redis.from_url(TEST_REDIS_URL)
    try:
        conn.ping()
    except redis.ConnectionError as exc:
        pytest.fail(f"Redis is required at {TEST_REDIS_URL}: {exc}")
    conn.flushdb()
    yield TEST_REDIS_URL
    conn.flushdb()
    conn.close()


@pytest.fixture
def redis_conn(redis_url: str) -> Iterator[redis.Redis]:
    conn = redis.Redis.from_url(redis_url)
    yield conn
    conn.close()


@pytest.fixture
def make_system(tmp_path: Path, redis_url: str) -> Iterator[type[System]]:
    """Build and start the whole system: `make_system(workers=2, scheduler=True)`."""
    started: list[System] = []

    def factory(**options: object) -> System:
        system = System(tmp_path, redis_url, **options)  # type: ignore[arg-type]
        started.append(system)
        return system.start()

    yield factory  # type: ignore[misc]
    for system in started:
        system.stop()
    if started:
        assert_registered_jobs(redis.Redis.from_url(redis_url))


def assert_registered_jobs(conn: redis.Redis) -> None:
    """Every job the system queued during the test names a function core.job_kinds lists."""
    ids = [key.decode().removeprefix("rq:job:") for key in conn.scan_iter("rq:job:*")]
    queued = {job.func_name for job in Job.fetch_many(ids, connection=conn) if job is not None}
    conn.close()
    assert {path for path in queued if JobKind.of_path(path) is None} == set()
