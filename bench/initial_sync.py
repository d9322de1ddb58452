"""Initial sync: staff x appointments into Outlook and staff x Outlook events into Coconut.

    .venv/bin/python bench/initial_sync.py [--staff 20] [--appointments 20] [--events 20]
                                           [--workers 2]

Seeds both emulators (the seed plus `appointments` bookings and `events` Outlook events per
staff member, made through their APIs before the clock starts), runs the initial sync with
`workers` workers until the queue is empty, and prints what was written, the wall time, Graph
requests per item written and each process's peak memory (VmHWM). Beside it, the same run's
lean ceiling: one Graph write per event we create, none per busy block.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.harness import System, wait_until  # noqa: E402
from tests.sync_support import CoconutAdmin, Outlook, at  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--staff", type=int, default=20)
    parser.add_argument("--appointments", type=int, default=20)
    parser.add_argument("--events", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--redis-url", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/6")
    )
    args = parser.parse_args()
    conn = redis.Redis.from_url(args.redis_url)
    conn.flushdb()
    system = System(
        Path(tempfile.mkdtemp(prefix="exsync-bench-")), args.redis_url, workers=args.workers,
        graph_args=["--users", str(args.staff), "--rate-limit", "1000000"],
        coconut_args=["--staff", str(args.staff), "--rate-limit", "1000000"],
        settings={"EXSYNC_LOG_LEVEL": "WARNING"},
    ).start()  # fmt: skip
    try:
        _seed(system, args.staff, args.appointments, args.events)
        before = system.graph_state()
        started = time.monotonic()
        subprocess.run([sys.executable, "-m", "exsync.cli", "initial-sync"], env=system.env,
                       check=True, capture_output=True)  # fmt: skip
        time.sleep(1)
        wait_until(lambda: _quiet(conn), 3600, interval=0.5, what="the initial sync")
        wall = time.monotonic() - started
        after = system.graph_state()
        want_events, want_blocks = _written(system)
        memory = {name: _peak_kib(proc.popen.pid) for name, proc in system.processes.items()
                  if proc.popen is not None}  # fmt: skip
    finally:
        system.stop()
    requests = sum(after["counters"]["requests"].values()) - sum(
        before["counters"]["requests"].values()
    )
    written = want_events + want_blocks
    print(f"initial sync: {args.staff} staff x ({args.appointments} bookings + seed) and "
          f"({args.events} Outlook events + seed), {args.workers} workers")  # fmt: skip
    print(f"{'written (our events + busy blocks)':<44}{want_events:,} + {want_blocks:,}")
    print(f"{'wall time (s)':<44}{wall:.1f}")
    print(f"{'items per second':<44}{written / wall:.1f}")
    print(f"{'Graph requests':<44}{requests:,}")
    print(f"{'Graph requests per item written':<44}{requests / max(1, written):.3f}")
    print(f"{'  lean ceiling (one Graph write per event)':<44}{want_events / max(1, written):.3f}")
    for name, kib in memory.items():
        print(f"{'peak memory ' + name + ' (MiB)':<44}{kib / 1024:.0f}")
    conn.flushdb()
    return 0


def _seed(system: System, staff: int, appointments: int, events: int) -> None:
    coconut, outlook = CoconutAdmin(system), Outlook(system)
    day = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(days=2)
    for s in range(1, staff + 1):
        for n in range(appointments):
            when = day + timedelta(days=n // 8, hours=n % 8)
            coconut.book(when.replace(hour=9 + n % 8).isoformat(), staff_id=s)
        for n in range(events):
            when = day + timedelta(days=n // 6)
            outlook.create(f"user{s}@contoso.example", subject=f"Meeting {n}", showAs="busy",
                           start=at(when, 7 + n % 6), end=at(when, 8 + n % 6))  # fmt: skip
    coconut.http.close()
    outlook.http.close()


def _quiet(conn: redis.Redis) -> bool:
    return conn.llen("rq:queue:exsync") == 0 and not any(conn.scan_iter("exsync:dirty:*"))


def _written(system: System) -> tuple[int, int]:
    """Our events in Outlook and our busy blocks in Coconut, once all is quiet."""
    graph, coconut = system.graph_state(), system.coconut_state()
    ours = sum(1 for evs in graph["events"].values() for e in evs if _marked(e))
    return ours, sum(1 for a in coconut["absences"] if a["source"] == "external")


def _marked(event: dict) -> bool:
    props = event.get("singleValueExtendedProperties") or []
    return any("CoconutExchangeSyncMark" in p["id"] for p in props)


def _peak_kib(pid: int) -> int:
    """The peak resident set of a process and its children (gunicorn's workers)."""
    total = 0
    for child in [pid, *_children(pid)]:
        try:
            status = Path(f"/proc/{child}/status").read_text()
        except OSError:
            continue
        total += next(
            int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM")
        )
    return total


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


if __name__ == "__main__":
    sys.exit(main())
