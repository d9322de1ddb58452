"""End-to-end latency at a steady rate of changes on both sides, and worker throughput.

    .venv/bin/python bench/latency.py [--rate 50] [--seconds 20] [--workers 2]

Starts the whole system (both emulators, web, workers, scheduler), lets the initial sync
finish, then makes `rate` changes per second for `seconds`, alternating: a Coconut appointment
rescheduled (webhook -> event updated in the Graph emulator) and an Outlook event created
(notification -> busy block created in the Coconut emulator). Latency is read from the
emulators' own timestamps once all is quiet (appointment updated_at -> event
lastModifiedDateTime; event createdDateTime -> absence created_at), so polling adds nothing.

Then the same worker class runs a burst of no-op jobs and a burst of real sync_appointment
jobs, side by side: jobs/s of each and the ratio.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import redis
from rq import Queue

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.settings_option import add_setting_option  # noqa: E402
from core import jobs  # noqa: E402
from core.job_kinds import JobKind  # noqa: E402
from tests.harness import System, wait_until  # noqa: E402
from tests.sync_support import CoconutAdmin, Outlook, at  # noqa: E402

STAFF = 10


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=float, default=50)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--redis-url", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/7")
    )
    add_setting_option(parser)
    args = parser.parse_args()
    conn = redis.Redis.from_url(args.redis_url)
    conn.flushdb()
    system = System(
        Path(tempfile.mkdtemp(prefix="exsync-bench-")), args.redis_url, workers=args.workers,
        scheduler=True, graph_args=["--users", str(STAFF)],
        coconut_args=["--staff", str(STAFF), "--rate-limit", "100000",
                      "--bookings-per-staff", "30"],  # enough jobs for the throughput bursts
        settings={"EXSYNC_LOG_LEVEL": "WARNING", "EXSYNC_SAFETY_NET_SECONDS": "3600",
                  **dict(args.setting)},
    ).start()  # fmt: skip
    try:
        jobs.ensure_queued(jobs.queue("exsync", conn), JobKind.INITIAL_SYNC, "exchange")
        wait_until(lambda: _quiet(conn), 600, interval=1, what="the initial sync")
        appointments, made = _drive(system, args.rate, args.seconds)
        wait_until(lambda: _quiet(conn), 300, interval=0.5, what="quiet")
        time.sleep(1)
        to_exchange, to_coconut = _latencies(system, appointments, made)
        noop, real, real_jobs = _throughput(system, conn)
    finally:
        system.stop()
    print(f"end-to-end latency: {args.rate:.0f} changes/s for {args.seconds:.0f} s, "
          f"{args.workers} workers, {STAFF} staff")  # fmt: skip
    print(f"{'direction':<34}{'n':>6}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}")
    for name, values in (("Coconut -> Outlook (reschedule)", to_exchange),
                         ("Outlook -> Coconut (new event)", to_coconut)):  # fmt: skip
        if values:
            q = statistics.quantiles(values, n=100) if len(values) > 1 else values * 99
            print(f"{name:<34}{len(values):>6}{q[49]:>9.0f}{q[98]:>9.0f}{max(values):>9.0f}")
    print(f"{'worker jobs/s (1 ExsyncWorker, burst)':<40}{'':>0}")
    print(f"  no-op job (RQ ceiling)   {noop:>8.1f}")
    print(f"  sync_appointment job     {real:>8.1f}   ratio {real / noop:.3f}")
    print(f"  ({real_jobs} sync_appointment jobs in 5 bursts, 2,000 no-op jobs)")
    conn.flushdb()
    return 0


def _quiet(conn: redis.Redis) -> bool:
    return conn.llen("rq:queue:exsync") == 0 and not any(conn.scan_iter("exsync:dirty:*"))


def _drive(system: System, rate: float, seconds: float) -> tuple[set[int], set[str]]:
    coconut, outlook = CoconutAdmin(system), Outlook(system)
    listed = coconut.http.get("/api/v2/b2b/appointments", params={"limit": 100}).json()["data"]
    live = [int(a["id"]) for a in listed if a["attributes"]["status"] == "scheduled"]
    day = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(days=30)
    touched: set[int] = set()
    made: set[str] = set()
    start, n = time.monotonic(), 0
    while time.monotonic() - start < seconds:
        due = start + n / rate
        time.sleep(max(0.0, due - time.monotonic()))
        if n % 2 == 0:
            appt = live[(n // 2) % len(live)]
            when = day + timedelta(minutes=15 * n)
            coconut.change(appt, start=when.isoformat())
            touched.add(appt)
        else:
            user = f"user{1 + (n // 2) % STAFF}@contoso.example"
            when, then = day + timedelta(hours=n), day + timedelta(hours=n + 1)
            span = {"start": at(when, when.hour), "end": at(then, then.hour)}
            made.add(outlook.create(user, subject=f"bench {n}", showAs="busy", **span))
        n += 1
    coconut.http.close()
    outlook.http.close()
    return touched, made


def _latencies(
    system: System, appointments: set[int], made: set[str]
) -> tuple[list[float], list[float]]:
    coconut, graph = system.coconut_state(), system.graph_state()
    updated = {
        a["id"]: _t(a["updated_at"]) for a in coconut["appointments"] if a["id"] in appointments
    }
    to_exchange = []
    for events in graph["events"].values():
        for e in events:
            for p in e.get("singleValueExtendedProperties") or []:
                parts = p["value"].split(":")
                if len(parts) == 3 and parts[1] == "appointment" and int(parts[2]) in updated:
                    to_exchange.append(
                        (_t(e["lastModifiedDateTime"]) - updated[int(parts[2])]) * 1000
                    )
    created = {
        e["id"]: _t(e["createdDateTime"])
        for evs in graph["events"].values()
        for e in evs
        if e["id"] in made
    }
    to_coconut = [(_t(a["created_at"]) - created[a["external_id"]]) * 1000
                  for a in coconut["absences"] if a.get("external_id") in created]  # fmt: skip
    return to_exchange, to_coconut


def _t(value: str) -> float:
    """An emulator timestamp (Graph's 7-digit fractions, Z or an offset) as epoch seconds."""
    found = re.match(r"(.*?T\d\d:\d\d:\d\d)(\.\d+)?(.*)$", value.replace("Z", "+00:00"))
    assert found is not None, value
    base, fraction, zone = found.groups()
    return datetime.fromisoformat(base + (fraction or ".0")[:7] + (zone or "+00:00")).timestamp()


def _throughput(system: System, conn: redis.Redis) -> tuple[float, float, int]:
    """One burst worker of our class: no-op jobs, then a sync_appointment per appointment
    (read Coconut, check the event's changeKey), each timed net of a burst that pays the same
    start-up: an empty one for the no-ops, one with a single sync job for the sync jobs (a
    worker's first sync job builds the Graph client, msgraph-sdk's imports and all)."""
    queue = jobs.queue("exsync", conn)
    empty = _burst(system)
    for _ in range(2000):
        queue.enqueue("os.getpid", result_ttl=0)
    noop = 2000 / max(1e-6, _burst(system) - empty)
    ids = [str(a["id"]) for a in system.coconut_state()["appointments"]]
    # One job per appointment per burst (they coalesce), so several bursts, all counted: one
    # burst of a few hundred jobs is within the noise of a worker's start-up.
    real_time, rounds = 0.0, 5
    for _ in range(rounds):
        _sync_jobs(queue, ids[:1])
        first = _burst(system)
        _sync_jobs(queue, ids)
        real_time += _burst(system) - first
    counted = rounds * (len(ids) - 1)
    return noop, counted / max(1e-6, real_time), counted


def _sync_jobs(queue: Queue, ids: list[str]) -> None:
    for item in ids:
        jobs.ensure_queued(queue, JobKind.SYNC_APPOINTMENT, item)


def _burst(system: System) -> float:
    began = time.monotonic()
    subprocess.run([sys.executable, "-m", "exsync.cli", "worker", "--burst", "--port", "0"],
                   env={**system.env, "EXSYNC_LOG_LEVEL": "WARNING"}, check=True,
                   capture_output=True)  # fmt: skip
    return time.monotonic() - began


if __name__ == "__main__":
    sys.exit(main())
