"""Shared fixtures: a real Redis (its own database, flushed before and after) and the system."""

from __future__ import annotations

import inspect
import os
import pkgutil
import time
import types
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis

from core import jobs
from core.job_kinds import JobKind
from tests.harness import System
from tests.receiver_support import everything, queued


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


# The server's own zone, as POSIX TZ strings (no zone database needed, no daylight time):
# whatever it is, the rules' answers must not change.
SERVER_ZONES = {"UTC0": 0, "PST8": -8, "JST-9": 9, "LINT-14": 14}


@pytest.fixture(params=sorted(SERVER_ZONES))
def server_zone(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The test runs with this process's local zone set to each of SERVER_ZONES in turn."""
    monkeypatch.setenv("TZ", request.param)
    time.tzset()
    local = datetime(2026, 12, 7, tzinfo=UTC).astimezone().utcoffset()
    assert local == timedelta(hours=SERVER_ZONES[request.param]), "TZ did not take"
    yield request.param
    monkeypatch.undo()
    time.tzset()


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


@pytest.fixture
def unchanged(redis_conn: redis.Redis) -> Iterator[None]:
    """The request under test writes nothing to Redis: no job, flag, or remembered delivery."""
    before = everything(redis_conn)
    yield
    assert everything(redis_conn) == before
    assert queued(redis_conn) == {}


def assert_registered_jobs(conn: redis.Redis) -> None:
    """Every job the system queued during the test names a function core.job_kinds lists."""
    ids = [key.decode().removeprefix("rq:job:") for key in conn.scan_iter("rq:job:*")]
    queued = {job.func_name for job in jobs.fetch_many(ids, conn) if job is not None}
    conn.close()
    assert {path for path in queued if JobKind.of_path(path) is None} == set()


# ---------------------------------------------------------------- the fast tier
# `pytest -m "not slow"` runs only tests that start no process (no gunicorn, worker, scheduler,
# emulator, browser, Compose or CLI subprocess) and run no RQ worker. This hook marks `slow`
# every test whose own code, or a fixture it uses (directly or through other fixtures), names
# one of the STARTERS below, itself or through the helpers of the tests package it calls
# (followed to any depth: `make_system` calls `System`, the emulator fixtures `Process`), and
# every test of the PROCESS_MODULES. A new way of starting a process belongs in STARTERS.

# What starts a process, as `module:name` (`pkgutil.resolve_name`), compared by identity so a
# re-export counts: a module, a function or a class.
STARTERS = (
    "subprocess",  # the CLI (tests/cli_support.py), Compose, schemathesis, gunicorn...
    "tests.harness:Process",  # every emulator and service process
    "tests.harness:System",  # the whole system: `make_system`
    "tests.graph_emulator_support:Emulator",
    "tests.chaos.system:ChaosSystem",
    "playwright.sync_api:sync_playwright",  # Chromium
    # Not a process, but an RQ worker run in-process (its command thread, its registries).
    "rq:SimpleWorker",
    "workers.runner:PromptWorker",
)

# Modules whose every test starts processes, however it does.
PROCESS_MODULES = frozenset({
    "tests/test_chaos.py",
    "tests/test_demo.py",
    "tests/test_demo_newcomer.py",
    "tests/test_worker_resilience.py",
})  # fmt: skip


def _names(code: types.CodeType) -> Iterator[str]:
    """The global names a function's code refers to, its nested functions' and lambdas' too."""
    yield from code.co_names
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _names(const)


def _starts(function: object, starters: set[int], seen: set[int]) -> bool:
    """Whether the function names a starter, itself or through the tests' helpers it calls."""
    hypothesis = getattr(function, "hypothesis", None)  # @given wraps the test it runs
    function = inspect.unwrap(getattr(hypothesis, "inner_test", function))  # type: ignore[arg-type]
    code, found = getattr(function, "__code__", None), getattr(function, "__globals__", {})
    if code is None or id(function) in seen:
        return False
    seen.add(id(function))
    for name in _names(code):
        value = found.get(name)
        if value is None:
            continue
        if id(value) in starters:
            return True
        helper = inspect.isfunction(value) and value.__module__.startswith("tests.")
        if helper and _starts(value, starters, seen):
            return True
    return False


def _slow(item: pytest.Item, starters: set[int]) -> bool:
    if item.nodeid.partition("::")[0] in PROCESS_MODULES:
        return True
    info = getattr(item, "_fixtureinfo", None)  # the fixture closure pytest resolved
    definitions = info.name2fixturedefs if info is not None else {}
    fixtures = [
        fixturedef.func
        for name in getattr(item, "fixturenames", ())
        for fixturedef in definitions.get(name, ())
    ]
    seen: set[int] = set()
    return any(
        _starts(function, starters, seen)
        for function in [getattr(item, "function", None), *fixtures]
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    starters = {id(pkgutil.resolve_name(name)) for name in STARTERS}
    for item in items:
        if _slow(item, starters):
            item.add_marker(pytest.mark.slow)
