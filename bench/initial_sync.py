"""Initial sync: staff x appointments into Outlook and staff x Outlook events into Coconut.

    .venv/bin/python bench/initial_sync.py [--staff 200] [--appointments 100] [--events 100]
                                           [--workers 2] [--baseline-staff 4] [--profile DIR]

Both emulators are seeded at start (the seed plus `appointments` bookings per staff member in
Coconut and `events` one-hour meetings per mailbox in Outlook: no API call, no webhook). Then,
in the same run:

1. the baseline: the old per-item path (`sync_staff`: one `sync_appointment` job and one mark
   look-up per item, then the mailbox's delta round) for the first `baseline-staff` staff;
2. the initial sync for everyone (the baseline's staff find their events in place and write
   nothing), timed until no job and no dirty flag is left.

For each it prints what was written each way (our events in Exchange, busy blocks in Coconut),
the wall time, and Graph requests per item written, counting a `$batch` as one request (what
goes over the wire) and as its inner requests (what Exchange's per-mailbox limits count); then
each process's peak memory (VmHWM) and the ratios to the baseline. `--profile DIR` runs the
workers under cProfile and prints where their time went.
"""

from __future__ import annotations

import argparse
import io
import os
import pstats
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core import jobs  # noqa: E402
from core.job_kinds import JobKind  # noqa: E402
from tests.harness import Process, System, wait_until  # noqa: E402
from workers.marks import MARK_PROPERTY_ID  # noqa: E402

QUEUE = "exsync"


@dataclass(frozen=True)
class Reading:
    """The emulators' counters and what they hold, at one moment."""

    at: float
    requests: int  # every route, inner $batch requests included
    routes: Counter[str]
    batches: int
    batched: int
    events: int  # ours, in Exchange
    blocks: int  # ours, in Coconut

    def since(self, before: Reading) -> Phase:
        return Phase(
            self.at - before.at, self.events - before.events, self.blocks - before.blocks,
            http=(self.requests - self.batched) - (before.requests - before.batched),
            counted=(self.requests - self.batches) - (before.requests - before.batches),
            batches=self.batches - before.batches, routes=self.routes - before.routes,
        )  # fmt: skip


@dataclass(frozen=True)
class Phase:
    seconds: float
    events: int
    blocks: int
    http: int  # Graph requests over the wire: a $batch is one
    counted: int  # as Exchange counts them: a $batch is its inner requests
    batches: int
    routes: Counter[str]  # inner $batch requests under their own routes

    @property
    def written(self) -> int:
        return self.events + self.blocks

    def per_item(self, requests: int) -> float:
        return requests / max(1, self.written)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--staff", type=int, default=200)
    parser.add_argument("--appointments", type=int, default=100)
    parser.add_argument("--events", type=int, default=100)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--baseline-staff", type=int, default=4)
    parser.add_argument("--profile", type=Path, default=None, help="cProfile the workers here")
    parser.add_argument(
        "--redis-url", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/6")
    )
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # stop every process on the way out
    if not 0 < args.baseline_staff < args.staff:
        parser.error("--baseline-staff must be between 1 and --staff - 1")
    conn = redis.Redis.from_url(args.redis_url)
    conn.flushdb()
    system = seeded_system(args.redis_url, args.staff, args.appointments, args.events)
    try:
        for index in range(args.workers):
            _start_worker(system, index, args.profile)
        start = _read(system)
        queue = jobs.queue(QUEUE, conn)
        for staff_id in range(1, args.baseline_staff + 1):
            jobs.ensure_queued(queue, JobKind.SYNC_STAFF, str(staff_id))
        middle = _read(system, _wait_quiet(conn))
        restart = _read(system)
        subprocess.run([sys.executable, "-m", "exsync.cli", "initial-sync"], env=system.env,
                       check=True, capture_output=True)  # fmt: skip
        end = _read(system, _wait_quiet(conn))
        memory = {name: _peak_kib(proc.popen.pid) for name, proc in system.processes.items()
                  if proc.popen is not None}  # fmt: skip
    finally:
        system.stop()
    baseline, bulk = middle.since(start), end.since(restart)
    print(f"initial sync: {args.staff} staff x ({args.appointments} bookings + seed) and "
          f"({args.events} Outlook events + seed), {args.workers} workers")  # fmt: skip
    _report(f"old per-item path, first {args.baseline_staff} staff (baseline)", baseline)
    _report(f"initial sync, all {args.staff} staff (the baseline's already in place)", bulk)
    print("ratios (initial sync / baseline)")
    _line("  items per second", _ratio(bulk.written / bulk.seconds,
                                      baseline.written / baseline.seconds))  # fmt: skip
    _line("  Graph requests per item", _ratio(bulk.per_item(bulk.http),
                                             baseline.per_item(baseline.http)))  # fmt: skip
    _line("  ... counting batches' inner requests", _ratio(
        bulk.per_item(bulk.counted), baseline.per_item(baseline.counted)))  # fmt: skip
    for name, kib in memory.items():
        _line(f"peak memory {name} (MiB)", f"{kib / 1024:.0f}")
    if args.profile:
        _print_profiles(system, args.profile)
    conn.flushdb()
    return 0


def seeded_system(
    redis_url: str, staff: int, appointments: int, events: int, **settings: str
) -> System:
    """Both emulators seeded at scale (no API call, no webhook) and the web app; no worker."""
    return System(
        Path(tempfile.mkdtemp(prefix="exsync-bench-")), redis_url, workers=0,
        graph_args=["--users", str(staff), "--events-per-user", str(events),
                    "--rate-limit", "1000000"],
        coconut_args=["--staff", str(staff), "--bookings-per-staff", str(appointments),
                      "--rate-limit", "1000000"],
        # The tests' 60-second job timeout would cut the initial sync's listing of 200 staff.
        settings={"EXSYNC_LOG_LEVEL": "WARNING", "EXSYNC_JOB_TIMEOUT": "1800", **settings},
    ).start()  # fmt: skip


def _start_worker(system: System, index: int, profile: Path | None) -> None:
    argv = [sys.executable, "-m", "exsync.cli", "worker", "--port", "0"]
    if profile is not None:
        profile.mkdir(parents=True, exist_ok=True)
        argv[1:1] = ["-m", "cProfile", "-o", str(profile / f"worker-{index}.prof")]
    name = f"worker-{index}"
    proc = Process(name, argv, system.env, system.tmp / f"{name}.log")
    system.processes[name] = proc
    proc.start()


def _read(system: System, at: float | None = None) -> Reading:
    """The counters now; `at` is when the phase they close ended (else now)."""
    with system.graph_http() as http:
        summary = http.get("/_emulator/summary", timeout=120).raise_for_status().json()
    counters = summary["counters"]
    ours = sum(n for pid, n in summary["by_extended_property"].items()
               if pid.lower() == MARK_PROPERTY_ID.lower())  # fmt: skip
    return Reading(
        at or time.monotonic(), sum(counters["requests"].values()), Counter(counters["requests"]),
        counters["requests"].get("POST /v1.0/$batch", 0), counters["batched"], ours,
        _blocks(system),
    )  # fmt: skip


def _blocks(system: System) -> int:
    with system.coconut_http() as http:
        state = http.get("/_emulator/state", timeout=120).raise_for_status().json()
    return sum(1 for a in state["absences"] if a["source"] == "external")


def _wait_quiet(conn: redis.Redis) -> float:
    """When the system went quiet: no job waiting or running and no dirty flag, and still so
    two seconds later (a webhook for the last write may still be on its way)."""

    def quiet() -> bool:
        queue = jobs.queue(QUEUE, conn)
        # sync_staff is not a coalesced job: nothing ever clears its flag.
        dirty = (k for k in conn.scan_iter("exsync:dirty:*", count=1000)
                 if not k.startswith(b"exsync:dirty:staff:"))  # fmt: skip
        return queue.count == 0 and queue.started_job_registry.count == 0 and not any(dirty)

    while True:
        wait_until(quiet, 7200, interval=0.5, what="the sync to finish")
        went_quiet = time.monotonic()
        time.sleep(2)
        if quiet():
            return went_quiet


def _report(title: str, phase: Phase) -> None:
    print(title)
    _line("  written (our events + busy blocks)", f"{phase.events:,} + {phase.blocks:,}")
    _line("  wall time (s)", f"{phase.seconds:.1f}")
    _line("  items per second", f"{phase.written / phase.seconds:.1f}")
    _line("  Graph requests ($batch = 1)", f"{phase.http:,} ({phase.batches:,} batches)")
    _line("  Graph requests per item written", f"{phase.per_item(phase.http):.3f}")
    _line("  ... counting batches' inner requests", f"{phase.per_item(phase.counted):.3f}")
    _line("  lean ceiling (one write per event)", f"{phase.per_item(phase.events):.3f}")
    for route, count in phase.routes.most_common(8):
        _line(f"    {route}", f"{count:,}")


def _line(label: str, value: str) -> None:
    print(f"{label:<46}{value}")


def _ratio(new: float, old: float) -> str:
    return f"{new / old:.2f}" if old else "-"


def _print_profiles(system: System, directory: Path) -> None:
    """Where the workers' time went, summed over every worker (they stop on SIGTERM, which
    lets cProfile write its file)."""
    files = [str(p) for p in sorted(directory.glob("worker-*.prof"))]
    if not files:
        print("no profile written")
        return
    out = io.StringIO()
    stats = pstats.Stats(*files, stream=out)
    stats.sort_stats("tottime").print_stats(25)
    stats.sort_stats("cumulative").print_stats(40)
    print(out.getvalue())


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
