"""One chaos run: start the system, let it converge, play the schedule, go quiet, check.

    .venv/bin/python bench/chaos.py --seed 7 --ops 2000

The run, in order:
1. the whole system starts (its own AOF Redis, web, `--workers` workers, the scheduler, both
   emulators) and must converge on the seed: the initial sync, checked exactly;
2. the schedule plays: changes on both sides at its pace, faults in between;
3. faults are cleared and the system goes quiet (nothing queued, running, scheduled, dirty or
   still being delivered). Now, before any safety net, every item whose latest change reached
   the service (its webhook or notification answered 2xx) must be right: no accepted webhook
   is lost;
4. the safety nets run once (what the scheduler does on its intervals: subscriptions and
   Coconut reconciled, every mailbox read), the system goes quiet again, and everything must be
   right, with nothing private anywhere and no busy block removed without a reason.

It prints the seed, what it did, the findings and the time to converge; the command to replay
a seed is the first line of its report.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import redis
from rq.registry import FailedJobRegistry, ScheduledJobRegistry, StartedJobRegistry

from core import jobs, reconcile, store
from core.job_kinds import JobKind
from exsync.processes import wait_until
from tests.chaos import oracle
from tests.chaos.schedule import Step, plan, tally
from tests.chaos.system import QUIET_NETS, ChaosSystem
from tests.chaos.world import World

QUEUE = "exsync"
NETS = (JobKind.RECONCILE_SUBSCRIPTIONS, JobKind.RECONCILE_COCONUT)


@dataclass
class Report:
    seed: int
    ops: int
    workers: int
    steps: list[Step] = field(default_factory=list)
    initial_seconds: float = 0.0
    schedule_seconds: float = 0.0
    quiet_seconds: float = 0.0  # from the schedule's end until nothing was left to do
    converge_seconds: float | None = None
    accepted_checked: dict[str, int] = field(default_factory=dict)
    findings: list[str] = field(default_factory=list)
    skipped: int = 0

    @property
    def ok(self) -> bool:
        return not self.findings and self.converge_seconds is not None

    def render(self) -> str:
        changes, faults = tally(self.steps)
        lines = [
            f"chaos run: .venv/bin/python bench/chaos.py --seed {self.seed} --ops {self.ops} "
            f"--workers {self.workers}",
            f"initial sync converged in {self.initial_seconds:.1f}s; schedule played in "
            f"{self.schedule_seconds:.1f}s ({len(self.steps)} steps, {self.skipped} found "
            "nothing to act on)",
            "changes: " + ", ".join(f"{k} {v}" for k, v in sorted(changes.items())),
            "faults:  " + ", ".join(f"{k} {v}" for k, v in sorted(faults.items())),
            "accepted before the safety nets, checked: "
            + ", ".join(f"{k} {v}" for k, v in sorted(self.accepted_checked.items())),
        ]
        if self.converge_seconds is not None:
            lines.append(
                f"quiet {self.quiet_seconds:.1f}s and converged {self.converge_seconds:.1f}s "
                "after the schedule ended (the safety nets ran in between)"
            )
        lines += [f"FINDING {f}" for f in self.findings]
        lines.append("PASS" if self.ok else "FAIL")
        return "\n".join(lines)


def run(
    seed: int, ops: int, tmp: Path, *, workers: int = 2, staff: int = 3, timeout: float = 240.0
) -> Report:
    report = Report(seed, ops, workers, plan(seed, ops, staff))
    system = ChaosSystem(
        tmp,
        "",
        workers=workers,
        scheduler=True,
        graph_args=["--users", str(staff), "--notify-retry-scale", "0.01"],
        # Coconut's redelivery schedule (30 s ... 13 h) shrunk so a delivery it keeps failing
        # gives up within two minutes rather than holding the run up for a quarter of an hour.
        coconut_args=[
            "--staff",
            str(staff),
            "--rate-limit",
            "100000",
            "--disable-after",
            "1000",
            "--retry-scale",
            "0.001",
        ],
        settings={
            **QUIET_NETS,
            "EXSYNC_SHOW_EVENT_TITLES": "true",
            "EXSYNC_HOLD_MIN_BLOCKS": "100000",
            "EXSYNC_JOB_TIMEOUT": "120",
        },
    )
    system.start()
    world = None
    try:
        world = World(system, seed)
        began = time.monotonic()
        wait_until(lambda: _subscribed(system, staff), 60, what="a subscription per mailbox")
        problems = _converge(world, timeout)
        report.initial_seconds = time.monotonic() - began
        if problems:
            report.findings += [f"initial sync: {p}" for p in problems]
            return report
        ready = time.time()
        world.take_backup()
        _play(world, report.steps)
        world.settle()
        ended = time.monotonic()
        report.schedule_seconds = ended - began - report.initial_seconds
        report.skipped = len(world.skipped)
        report.findings += world.errors
        try:
            _wait_quiet(system, timeout)
        except TimeoutError as exc:
            report.findings += [str(exc), *_health(system)]
            return report
        report.quiet_seconds = time.monotonic() - ended
        accepted = oracle.check(world, _accepted_scope(system, world, ready), privacy=False)
        report.accepted_checked = dict(accepted.checked)
        report.findings += [f"accepted webhook lost: {p}" for p in accepted.problems]
        _run_safety_nets(system)
        final = _converge(world, timeout)
        report.converge_seconds = time.monotonic() - ended if not final else None
        report.findings += final
        report.findings += _health(system)
    finally:
        if world is not None:
            world.close()
        system.stop()
    return report


def _play(world: World, steps: list[Step]) -> None:
    start = time.monotonic()
    for step in steps:
        delay = start + step.at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        world.apply(step)


def _subscribed(system: ChaosSystem, staff: int) -> bool:
    return len(system.graph_state()["subscriptions"]) >= staff


def _converge(world: World, timeout: float) -> list[str]:
    """Wait until quiet and right; the findings of the last check when time runs out."""
    deadline = time.monotonic() + timeout
    findings = oracle.Findings()
    while time.monotonic() < deadline:
        try:
            _wait_quiet(world.system, deadline - time.monotonic())
        except TimeoutError as exc:
            return [str(exc)]
        findings = oracle.check(world)
        if findings.ok:
            return []
        time.sleep(1)
    return findings.problems


def _wait_quiet(system: ChaosSystem, timeout: float) -> None:
    """Nothing queued, running, scheduled for retry, dirty, or on its way from an emulator,
    twice in a row a moment apart."""
    conn = redis.Redis.from_url(system.redis_url)
    busy: list[str] = []

    def quiet() -> bool:
        busy[:] = _busy(system, conn)
        if busy:
            return False
        time.sleep(0.5)
        busy[:] = _busy(system, conn)
        return not busy

    try:
        wait_until(quiet, max(timeout, 1), interval=0.5, what="the system to go quiet")
    except TimeoutError:
        raise TimeoutError(f"the system never went quiet: {busy}") from None
    finally:
        conn.close()


def _busy(system: ChaosSystem, conn: redis.Redis) -> list[str]:
    """What is still going on, in words (empty when quiet)."""
    try:
        queue = jobs.queue(QUEUE, conn)
        busy = [
            f"{name}: {ids}"
            for name, ids in (
                ("queued", queue.get_job_ids()),
                ("running", StartedJobRegistry(queue=queue).get_job_ids()),
                ("scheduled", ScheduledJobRegistry(queue=queue).get_job_ids()),
                ("dirty", [k.decode() for k in conn.scan_iter(match=store.dirty_key("*", "*"))]),
            )
            if ids
        ]
    except redis.RedisError as exc:
        return [f"redis: {exc}"]
    dead = system.dead_unexpectedly()
    if dead:
        busy.append(f"dead: {dead}")
    coconut = system.coconut_state()
    pending = [
        d["id"]
        for hook in coconut["webhooks"]
        for d in hook["deliveries"]
        if d["status"] == "pending"
    ]
    if pending:
        busy.append(f"coconut deliveries pending: {len(pending)}")
    notifications = system.graph_state()["counters"]["notifications"]["pending"]
    if notifications:
        busy.append(f"graph notifications pending: {notifications}")
    return busy


def _accepted_scope(system: ChaosSystem, world: World, ready: float) -> oracle.Scope:
    """Leave out what changed after the initial sync converged and whose latest change never
    reached the service (answered 2xx): all the rest must be right before any safety net."""
    graph = system.graph_state()["announcements"]
    # Hints accepted before Redis lost everything are gone with it: the reconciliation after
    # the next Authorize repairs what they said, which the final check covers.
    wiped = world.wiped_at
    stale_mailboxes = {
        uid
        for uid, log in graph.items()
        if log["changed_at"] > ready
        and (log["announced_at"] < log["changed_at"] or log["changed_at"] <= wiped)
    }
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    for hook in system.coconut_state()["webhooks"]:
        for delivery in hook["deliveries"]:  # in the order they were made
            data = json.loads(delivery["payload"]).get("data") or {}
            kind = {"appointments": "appointment", "absences": "absence"}.get(data.get("type"))
            if kind is not None:
                latest[(kind, str(data["id"]))] = delivery
    stale_items = {
        key
        for key, delivery in latest.items()
        if _epoch(delivery["created_at"]) > ready
        and (delivery["status"] != "delivered" or _epoch(delivery["created_at"]) <= wiped)
    }
    # A Coconut admin's change to our blocks sends no webhook: only a full round repairs it; a
    # block Coconut refused waits for its retry.
    conn = redis.Redis.from_url(system.redis_url)
    prefix = store.refused_key("")
    refused = {k.decode()[len(prefix) :] for k in conn.scan_iter(match=prefix + "*")}
    conn.close()
    return oracle.Scope(stale_mailboxes | world.tampered | refused, stale_items)


def _epoch(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def _run_safety_nets(system: ChaosSystem) -> None:
    """What the scheduler queues on its intervals, all at once, with each mailbox's daily full
    reconciliation (its window's move) brought forward."""
    conn = redis.Redis.from_url(system.redis_url)
    queue = jobs.queue(QUEUE, conn)
    for job in NETS:
        jobs.ensure_queued(queue, job, "all")
    reconcile.request_all(queue, "chaos: the daily reconciliation")
    conn.close()


def _health(system: ChaosSystem) -> list[str]:
    findings = [f"{name} died on its own" for name in system.dead_unexpectedly()]
    conn = redis.Redis.from_url(system.redis_url)
    failed = FailedJobRegistry(queue=jobs.queue(QUEUE, conn))
    findings += [f"job {job_id} exhausted its retries" for job_id in failed.get_job_ids()]
    conn.close()
    return findings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="bench/chaos.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--ops", type=int, default=200, help="steps in the schedule")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--staff", type=int, default=3, help="staff members with a mailbox")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to converge")
    parser.add_argument("--keep", action="store_true", help="keep the logs' directory")
    parser.add_argument("--print-schedule", action="store_true")
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix=f"exsync-chaos-{args.seed}-"))
    report = run(
        args.seed, args.ops, tmp, workers=args.workers, staff=args.staff, timeout=args.timeout
    )
    if args.print_schedule:
        print("\n".join(step.describe() for step in report.steps))
    print(report.render())
    print(f"logs: {tmp}")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
