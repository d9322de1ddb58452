"""Subscriptions when Graph behaves as it really does (research/graph-reality.md items 3 and 5),
on the real path: the Graph emulator refusing a duplicate with 409, sending lifecycle
notifications on its own cadence and 429s without `Retry-After`; the CLI and workers doing what
the scheduler's jobs do.

- A create that meets a subscription of ours adopts it (we hold its clientState and it notifies
  today's URL) or replaces it (its record is lost, or it notifies an old public URL); one of
  another deployment (same app registration) is left alone and reported on the mailbox's row.
- A storm of `reauthorizationRequired` costs one reauthorization; a removal absorbed by a
  waiting renewal or reauthorization still gets its subscription recreated; `missed` costs one
  delta round.
- A 429 without `Retry-After` backs the mailbox off exponentially, with jitter, for every
  worker (core.microsoft.throttle).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from rq import Queue

from core import jobs, staff_status
from core.job_kinds import JobKind
from core.microsoft.graph import tls_context
from core.microsoft.throttle import MailboxGate, RetryPolicy
from subscriptions import manager
from tests.cli_support import run
from tests.graph_emulator_support import Emulator, Receiver, running
from tests.graph_emulator_support import app_token as emulator_app_token
from tests.harness import System, wait_until
from tests.sync_support import Outlook, at, graph_fault, user_id, wait_blocks

pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning:msgraph.*"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning:kiota_abstractions.*"),
]

USERS = ["--users", "3"]
USER1, USER3 = "user1@contoso.example", "user3@contoso.example"
QUIET = {"EXSYNC_SAFETY_NET_SECONDS": "3600", "EXSYNC_RECONCILE_SECONDS": "3600",
         "EXSYNC_SHOW_EVENT_TITLES": "true"}  # fmt: skip


def subscriptions(system: System, *args: str, env: dict[str, str] | None = None) -> Any:
    return run({**system.env, **(env or {})}, "subscriptions", *args)


def created(system: System, address: str) -> str:
    done = subscriptions(system, "create", address)
    assert done.returncode == 0, done.stdout + done.stderr
    return str(done.stdout.strip().rsplit(" ", 1)[1])


def at_graph(system: System) -> dict[str, tuple[str, str]]:
    """Subscription id -> (mailbox, notificationUrl), as Graph holds them."""
    return {s["id"]: (s["mailbox"], s["notificationUrl"])
            for s in system.graph_state()["subscriptions"]}  # fmt: skip


def app_token(system: System) -> str:
    with system.graph_http() as http:
        return emulator_app_token(http)


def requests_to(system: System, route: str) -> int:
    return int(system.graph_state()["counters"]["requests"].get(route, 0))


def idle(queue: Queue) -> bool:
    return not queue.count and not queue.started_job_registry.count


def test_a_create_that_meets_its_own_subscription_adopts_it_or_replaces_it(
    make_system,  # type: ignore[no-untyped-def]
    redis_conn: redis.Redis,
) -> None:
    """Graph answers 409 where the emulator once made a duplicate: the mailbox's pointer lost
    (its record kept) adopts the live one as it is; the record lost too (a create whose answer
    never came, a Redis restored from an old backup) replaces it with one we hold the
    clientState of."""
    system = make_system(workers=0, graph_args=USERS)
    uid = user_id(system, USER1)
    first = created(system, USER1)

    redis_conn.delete(f"exsync:subscription_of:{uid}")
    assert created(system, USER1) == first, "adopted, not a second one"
    assert redis_conn.get(f"exsync:subscription_of:{uid}") == first.encode()
    assert list(at_graph(system)) == [first]

    redis_conn.delete(f"exsync:subscription_of:{uid}", f"exsync:subscription:{first}")
    second = created(system, USER1)
    assert second != first
    assert list(at_graph(system)) == [second], "the one we could not verify is gone"
    assert redis_conn.hget(f"exsync:subscription:{second}", "client_state")


def test_reconciliation_replaces_an_old_public_url_and_leaves_another_deployment_alone(
    make_system,  # type: ignore[no-untyped-def]
    redis_conn: redis.Redis,
) -> None:
    """Another deployment with the same app registration holds user3's mailbox: Graph refuses
    ours (409), the row says so, the rest are subscribed. Then the public URL changes: ours of
    the old URL are deleted and made again; the other deployment's is never touched."""
    system = make_system(workers=0, graph_args=USERS)
    uid3 = user_id(system, USER3)
    other = Receiver()
    with running(other) as foreign_url:
        with httpx.Client(verify=tls_context(str(system.ca_file)), timeout=15) as http:
            made = http.post(
                f"{system.graph_base}/v1.0/subscriptions",
                headers={"Authorization": f"Bearer {app_token(system)}"},
                json={"changeType": "created,updated,deleted", "notificationUrl": foreign_url,
                      "resource": f"users/{uid3}/events", "clientState": "theirs",
                      "expirationDateTime": (datetime.now(UTC) + timedelta(days=2)).isoformat()},
            )  # fmt: skip
        assert made.status_code == 201, made.text
        theirs = made.json()["id"]

        done = subscriptions(system, "create", "--all")
        assert done.returncode == 0, done.stdout + done.stderr
        assert "'subscribed': 2" in done.stdout and "'conflicts': 1" in done.stdout
        assert "subscription.conflict" in done.stderr
        old_url = f"{system.web_url}/webhooks/graph"
        before = at_graph(system)
        assert before[theirs] == (uid3, foreign_url)
        assert sorted(url for sub, (_, url) in before.items() if sub != theirs) == [old_url] * 2

        (row,) = [r for r in staff_status.rows(redis_conn, polling=False) if r.email == USER3]
        assert row.state == staff_status.State.WARNING
        assert row.problem.startswith(manager.CONFLICT), row.problem
        refused = subscriptions(system, "create", USER3)
        assert refused.returncode == 1
        assert refused.stderr.strip().splitlines()[-1].startswith("exsync: Graph refused (409 ")

        new_public = system.web_url.replace("127.0.0.1", "localhost")
        moved = subscriptions(system, "create", "--all", env={"EXSYNC_PUBLIC_URL": new_public})
        assert moved.returncode == 0, moved.stdout + moved.stderr
        assert "'stale_url': 2" in moved.stdout and "'subscribed': 2" in moved.stdout
    after = at_graph(system)
    assert after[theirs] == (uid3, foreign_url), "another deployment's is never touched"
    ours = {sub: url for sub, (_, url) in after.items() if sub != theirs}
    assert list(ours.values()) == [f"{new_public}/webhooks/graph"] * 2
    assert not set(ours) & set(before)
    assert {r.subscription_id for r in manager_records(redis_conn)} == set(ours)


def manager_records(conn: redis.Redis) -> list[manager.Local]:
    found = []
    for key in conn.scan_iter(match="exsync:subscription:*"):
        raw = conn.hgetall(key)
        if b"user_id" in raw:
            sub_id = key.decode().rsplit(":", 1)[1]
            found.append(manager.Local(sub_id, raw[b"user_id"].decode(), 0.0, 0.0))
    return found


def test_a_storm_of_reauthorization_notices_costs_one_reauthorization(
    make_system,  # type: ignore[no-untyped-def]
    redis_conn: redis.Redis,
) -> None:
    """Graph asks again every few minutes, or more often: one reauthorization (and renewal)
    serves the notices of the next few minutes, which only check the subscription is there."""
    system = make_system(workers=1, graph_args=USERS, settings=QUIET)
    uid = user_id(system, USER1)
    sub_id = created(system, USER1)
    long_ago = time.time() - 3600
    redis_conn.hset(f"exsync:subscription:{sub_id}",
                    mapping={"created_at": long_ago, "authorized_at": long_ago})  # fmt: skip
    graph_fault(system, kind="reauthorization_required", every=0.3, mailbox=uid)
    wait_until(lambda: system.graph_state()["counters"]["notifications"]["delivered"] >= 15, 30,
               what="a storm of reauthorizationRequired")  # fmt: skip
    with system.graph_http() as http:
        http.delete("/_emulator/faults").raise_for_status()
    queue = jobs.queue("exsync", redis_conn)
    wait_until(lambda: idle(queue), 60, what="every notice answered")
    assert requests_to(system, "POST /v1.0/subscriptions/<sub_id>/reauthorize") == 1
    assert requests_to(system, "PATCH /v1.0/subscriptions/<sub_id>") == 1
    assert requests_to(system, "GET /v1.0/subscriptions/<sub_id>") >= 2, "the later ones checked"
    assert list(at_graph(system)) == [sub_id]
    assert queue.failed_job_registry.count == 0


@pytest.mark.parametrize("waiting", [JobKind.RENEW_SUBSCRIPTION, JobKind.REAUTHORIZE_SUBSCRIPTION])
def test_a_removal_absorbed_by_a_waiting_subscription_job_is_not_lost(
    make_system,  # type: ignore[no-untyped-def]
    redis_conn: redis.Redis,
    waiting: JobKind,
) -> None:
    """All subscription jobs coalesce as one: `subscriptionRemoved` finds a renewal (or a
    reauthorization, lately done, so only checked) waiting and joins it; that job meets Graph's
    404 and recreates the subscription."""
    system = make_system(workers=0, graph_args=USERS, settings=QUIET)
    uid = user_id(system, USER1)
    first = created(system, USER1)
    queue = jobs.queue("exsync", redis_conn)
    job_id = jobs.ensure_queued(queue, waiting, first)
    with system.graph_http() as http:
        http.post(f"/_emulator/subscriptions/{first}/lifecycle",
                  json={"event": "subscriptionRemoved"}).raise_for_status()  # fmt: skip
    wait_until(lambda: int(redis_conn.get(f"exsync:dirty:subscription:{first}") or 0) >= 2, 10,
               what="the removal's recreate joining the waiting job")  # fmt: skip
    assert jobs.fetch(job_id, redis_conn).func_name == waiting.path
    system.start_worker(0)
    fresh = wait_until(lambda: redis_conn.get(f"exsync:subscription_of:{uid}") not in
                       (None, first.encode()), 60, what="the subscription recreated")  # fmt: skip
    assert fresh
    wait_until(lambda: list(at_graph(system)) not in ([], [first]), 10, what="Graph holding it")
    (now,) = at_graph(system)
    assert now == redis_conn.get(f"exsync:subscription_of:{uid}").decode()


def test_missed_notifications_cost_one_delta_round(
    make_system,  # type: ignore[no-untyped-def]
    redis_conn: redis.Redis,
) -> None:
    """Graph dropped the notifications of a change and says `missed`: one round reads it,
    however many times Graph says it (no safety net in between)."""
    system = make_system(workers=1, graph_args=USERS, settings=QUIET)
    uid = user_id(system, USER1)
    sub_id = created(system, USER1)
    queue = jobs.queue("exsync", redis_conn)
    wait_until(lambda: idle(queue), 60, what="the first round")

    def rounds() -> int:
        return int(system.graph_state()["counters"]["delta_rounds"].get(uid, 0))

    before = rounds()
    graph_fault(system, kind="missed")
    graph_fault(system, kind="notification_drop", count=2)  # Outlook's created and updated
    day = (datetime.now(UTC) + timedelta(days=3)).replace(minute=0, second=0, microsecond=0)
    Outlook(system).create(USER1, subject="Missed", showAs="busy", start=at(day, 9),
                           end=at(day, 10))  # fmt: skip
    wait_blocks(system, 1, lambda blocks: [b for b in blocks if b["title"] == "Missed"],
                what="the change read after `missed`")  # fmt: skip
    wait_until(lambda: idle(queue), 30, what="the round done")
    assert rounds() == before + 1
    assert system.graph_state()["counters"]["notifications"]["dropped"] == 2

    system.kill("worker-0")
    with system.graph_http() as http:
        for _ in range(8):
            http.post(f"/_emulator/subscriptions/{sub_id}/lifecycle",
                      json={"event": "missed"}).raise_for_status()  # fmt: skip
    wait_until(lambda: system.graph_state()["counters"]["notifications"]["delivered"] >= 8, 30,
               what="eight `missed` delivered")  # fmt: skip
    system.start_worker(0)
    wait_until(lambda: idle(queue) and rounds() > before + 1, 60, what="their round")
    time.sleep(1.0)
    assert rounds() == before + 2


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[Emulator]:
    emu = Emulator(tmp_path).start()
    yield emu
    emu.stop()


def test_a_429_without_retry_after_backs_the_mailbox_off_exponentially_with_jitter(
    emulator: Emulator,
    redis_conn: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Each 429 without `Retry-After` for a mailbox, from any worker, doubles the wait every
    worker makes (less up to half of it, at random); with `Retry-After` the wait is Graph's."""
    monkeypatch.setattr(RetryPolicy, "base_seconds", 0.2)
    monkeypatch.setattr(RetryPolicy, "max_seconds", 5.0)
    uid = emulator.add_user("ana@contoso.example")
    workers = [MailboxGate(redis_conn, "app-1"), MailboxGate(redis_conn, "app-1")]

    def throttled(count: int, **retry_after: int) -> None:
        armed = emulator.control("POST", "/faults", {"kind": "concurrency_throttle",
                                                     "mailbox": uid, "count": count,
                                                     **retry_after})  # fmt: skip
        assert armed.status_code == 201, armed.text

    async def scenario() -> list[float]:
        client = emulator.client()

        def events() -> Any:
            return client.users.by_user_id(uid).events.get()

        throttled(3)
        await workers[0].call(uid, events)
        throttled(1)
        await workers[1].call(uid, events)  # another worker, the same mailbox: the 4th strike
        throttled(1, retry_after=1)
        await workers[1].call(uid, events)
        return [r.wait for r in caplog.records if r.getMessage() == "graph.throttled"]  # type: ignore[attr-defined]

    with caplog.at_level(logging.INFO, logger="core.microsoft.throttle"):
        waits = emulator.run(scenario())
    assert len(waits) == 5, waits
    for strike, wait in enumerate(waits[:4]):
        full = 0.2 * 2**strike
        assert full / 2 <= wait <= full, (strike, waits)
    assert waits[:4] != [0.2, 0.4, 0.8, 1.6], "jittered"
    assert waits[4] == 1.0, "Graph's Retry-After as asked"
