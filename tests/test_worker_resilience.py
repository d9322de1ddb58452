"""A worker outlives a Redis restart in the middle of a job (found by the chaos suite: RQ's loop
quits on a Redis error outside its dequeue, so one restart stopped every busy worker for good)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis
from rq.registry import StartedJobRegistry

from core import jobs
from tests.chaos.system import QUIET_NETS, ChaosSystem
from tests.harness import wait_until
from tests.sync_support import CoconutAdmin, wait_for_events

pytestmark = pytest.mark.slow


def test_a_worker_busy_when_redis_dies_stays_up_and_finishes_the_work(tmp_path: Path) -> None:
    # Every Graph call takes a second, so the job is surely running when Redis goes.
    system = ChaosSystem(tmp_path, "", workers=1, graph_args=["--users", "3", "--latency", "1"],
                         settings=QUIET_NETS)  # fmt: skip
    system.start()
    try:
        worker = system.processes["worker-0"]
        admin = CoconutAdmin(system)
        start = (datetime.now(UTC) + timedelta(days=3)).replace(microsecond=0).isoformat()
        booked = admin.book(start, staff_id=1)
        conn = redis.Redis.from_url(system.redis_url)
        running = StartedJobRegistry(queue=jobs.queue("exsync", conn))
        wait_until(lambda: f"appointment-{booked}" in running.get_job_ids(), 20, interval=0.02,
                   what="the appointment's job running")  # fmt: skip

        system.restart_redis(down_seconds=2)

        # A job the worker had taken but not yet marked started when Redis went sits in RQ's
        # intermediate queue, which its maintenance clears after a minute: allow for that.
        wait_for_events(system, "user1@contoso.example", f"exsync:appointment:{booked}", 1,
                        timeout=150)  # fmt: skip
        assert worker.running, worker.log()[-3000:]
        assert "worker.restarting" in worker.log()
    finally:
        system.stop()


def test_a_worker_started_while_redis_is_down_waits_for_it_and_then_works(tmp_path: Path) -> None:
    # Found by the chaos suite (seed 7, 2,000 steps): a worker that a supervisor started again
    # while Redis was restarting exited at once, so the run ended one worker short.
    system = ChaosSystem(tmp_path, "", workers=1, graph_args=["--users", "3"],
                         settings=QUIET_NETS)  # fmt: skip
    system.start()
    try:
        system.kill("worker-0")
        system.restart_redis(down_seconds=3, while_down=lambda: system.start_worker(1))
        worker = system.processes["worker-1"]
        assert worker.running, worker.log()[-3000:]

        admin = CoconutAdmin(system)
        start = (datetime.now(UTC) + timedelta(days=3)).replace(microsecond=0).isoformat()
        booked = admin.book(start, staff_id=1)
        wait_for_events(system, "user1@contoso.example", f"exsync:appointment:{booked}", 1,
                        timeout=60)  # fmt: skip
        assert worker.running and "worker.restarting" in worker.log(), worker.log()[-3000:]
    finally:
        system.stop()
