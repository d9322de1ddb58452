"""What a full reconciliation costs, beside the incremental round it backs up.

    .venv/bin/python bench/reconcile.py [--staff 100] [--appointments 20] [--events 30]
                                        [--workers 2] [--rounds 3]

Both emulators are seeded (the seed plus `appointments` bookings per staff member in Coconut
and `events` one-hour meetings per mailbox in Outlook, each mailbox with a weekly series), the
initial sync runs, and then, `rounds` times, side by side:

1. the baseline: an incremental round for every mailbox (`sync_mailbox` on its delta cursor,
   what the safety net queues every 15 minutes), nothing to do;
2. a full reconciliation of every staff member (core.reconcile.request_all, what Resync and
   the daily window move ask for): the window read whole, every busy block compared with
   Coconut's, every appointment with our marked events. Nothing is out of place, so both
   measure the reading, which is the steady cost.

For each it prints, per mailbox, Graph requests (a `$batch` as one), Coconut requests and
wall seconds for the whole pass, with the median and spread over the rounds, and the ratio of
the full pass to the baseline. Then what a full pass over 1,000 mailboxes costs: requests
against Graph's limit (10,000 per 10 minutes per app and mailbox, 4 at once) and time at the
measured rate per worker.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.initial_sync import _start_worker, _wait_quiet, seeded_system  # noqa: E402
from core import jobs, reconcile  # noqa: E402
from core.job_kinds import JobKind  # noqa: E402
from tests.harness import System  # noqa: E402

QUEUE = "exsync"


@dataclass(frozen=True)
class Pass:
    graph: int
    coconut: int
    seconds: float


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--staff", type=int, default=100)
    parser.add_argument("--appointments", type=int, default=20)
    parser.add_argument("--events", type=int, default=30)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--redis-url", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/6")
    )
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    conn = redis.Redis.from_url(args.redis_url)
    conn.flushdb()
    system = seeded_system(args.redis_url, args.staff, args.appointments, args.events,
                           EXSYNC_SAFETY_NET_SECONDS="86400")  # fmt: skip
    incremental: list[Pass] = []
    full: list[Pass] = []
    try:
        for index in range(args.workers):
            _start_worker(system, index, None)
        subprocess.run([sys.executable, "-m", "exsync.cli", "initial-sync"], env=system.env,
                       check=True, capture_output=True)  # fmt: skip
        _wait_quiet(conn)
        queue = jobs.queue(QUEUE, conn)
        covered = reconcile.covered(conn)
        for _ in range(args.rounds):
            incremental.append(_timed(system, conn, lambda: [
                jobs.ensure_queued(queue, JobKind.SYNC_MAILBOX, m) for m in covered
            ]))  # fmt: skip
            full.append(_timed(system, conn, lambda: reconcile.request_all(queue, "bench")))
    finally:
        system.stop()
        conn.flushdb()
    n = len(covered)
    print(
        f"reconciliation: {n} mailboxes x ({args.appointments} bookings + seed) and "
        f"({args.events} Outlook events + seed), {args.workers} workers, {args.rounds} rounds"
    )
    rows = [
        ("Graph requests per mailbox", lambda p: p.graph / n),
        ("Coconut requests per mailbox", lambda p: p.coconut / n),
        ("seconds per mailbox (wall, whole pass)", lambda p: p.seconds / n),
    ]
    for label, measure in rows:
        base = [measure(p) for p in incremental]
        new = [measure(p) for p in full]
        ratios = [f / b for f, b in zip(new, base, strict=True) if b]
        print(
            f"  {label:<40} incremental {_spread(base)}   full {_spread(new)}   "
            f"ratio {_spread(ratios)}"
        )
    graph = statistics.median(p.graph / n for p in full)
    seconds = statistics.median(p.seconds / n for p in full)
    print("a full pass over 1,000 mailboxes")
    print(
        f"  Graph requests: {graph * 1000:,.0f} in all, {graph:.1f} per mailbox (Graph allows "
        "10,000 per mailbox in 10 minutes and 4 at once: the per-mailbox limit never binds)"
    )
    print(
        f"  at this run's rate with {args.workers} workers: {seconds * 1000 / 60:.1f} minutes; "
        f"spread over a day by the window move: {graph * 1000 / 86_400:.3f} Graph requests/s"
    )
    return 0


def _timed(system: System, conn: redis.Redis, start) -> Pass:  # type: ignore[no-untyped-def]
    before = _counts(system)
    began = time.monotonic()
    start()
    ended = _wait_quiet(conn)
    after = _counts(system)
    return Pass(after[0] - before[0], after[1] - before[1], ended - began)


def _counts(system: System) -> tuple[int, int]:
    """(Graph requests with a $batch as one, Coconut API requests) so far."""
    with system.graph_http() as http:
        routes = http.get("/_emulator/summary", timeout=120).json()["counters"]["requests"]
    with system.coconut_http() as http:
        state = http.get("/_emulator/state", timeout=120).json()
    coconut = sum(n for route, n in state["requests"]["by_route"].items() if "/b2b/" in route)
    return sum(routes.values()), coconut


def _spread(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{statistics.median(values):.2f} [{min(values):.2f}-{max(values):.2f}]"


if __name__ == "__main__":
    sys.exit(main())
