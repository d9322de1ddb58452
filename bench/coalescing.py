"""Coalescing: a burst of Graph notifications across many mailboxes, and what it costs Graph.

    .venv/bin/python bench/coalescing.py [--mailboxes 100] [--per-mailbox 100] [--workers 2]

Starts the whole system (both emulators, web, workers) on a Redis database of its own, lets the
initial sync subscribe and read every mailbox, then POSTs mailboxes x per-mailbox change
notifications (valid clientState, shuffled) as fast as 16 threads can, and measures until every
mailbox is in sync again. Prints Graph requests made per notification (the naive design costs
at least 1: a read per notification), delta rounds per mailbox and the time to quiet.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.settings_option import add_setting_option  # noqa: E402
from tests.harness import TENANT, System, wait_until  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mailboxes", type=int, default=100)
    parser.add_argument("--per-mailbox", type=int, default=100)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--redis-url", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/8")
    )
    add_setting_option(parser)
    args = parser.parse_args()
    conn = redis.Redis.from_url(args.redis_url)
    conn.flushdb()
    n = args.mailboxes
    system = System(
        Path(tempfile.mkdtemp(prefix="exsync-bench-")), args.redis_url, workers=args.workers,
        graph_args=["--users", str(n)], coconut_args=["--staff", str(n)],
        settings={"EXSYNC_LOG_LEVEL": "WARNING", **dict(args.setting)},
    ).start()  # fmt: skip
    try:
        started = time.monotonic()
        env = {**system.env, "PYTHONPATH": str(ROOT)}
        os.spawnve(
            os.P_WAIT, sys.executable, [sys.executable, "-m", "exsync.cli", "initial-sync"], env
        )
        wait_until(lambda: _subscribed(conn) == n, 600, interval=1, what="subscriptions")
        wait_until(lambda: _quiet(conn), 900, interval=1, what="the initial sync")
        initial = time.monotonic() - started
        items = _notifications(conn, args.per_mailbox)
        before = system.graph_state()["counters"]
        sent = time.monotonic()
        with httpx.Client(timeout=10) as http, ThreadPoolExecutor(16) as pool:
            url = f"{system.web_url}/webhooks/graph"
            statuses = list(
                pool.map(lambda item: http.post(url, json={"value": [item]}).status_code, items)
            )
        posted = time.monotonic() - sent
        wait_until(lambda: _quiet(conn), 600, interval=0.2, what="every mailbox in sync")
        settled = time.monotonic() - sent
        after = system.graph_state()["counters"]
    finally:
        system.stop()
    requests = sum(after["requests"].values()) - sum(before["requests"].values())
    rounds = sum(after["delta_rounds"].values()) - sum(before["delta_rounds"].values())
    total = len(items)
    print(f"coalescing: {total:,} notifications over {n} mailboxes, {args.workers} workers "
          f"(initial sync of {n} mailboxes took {initial:.1f} s)")  # fmt: skip
    print(f"{'':<40}{'value':>12}")
    print(f"{'accepted (202)':<40}{statuses.count(202):>12,}")
    print(f"{'posting took (s)':<40}{posted:>12.1f}")
    print(f"{'all mailboxes in sync after (s)':<40}{settled:>12.1f}")
    print(f"{'Graph requests':<40}{requests:>12,}")
    print(f"{'Graph requests per notification':<40}{requests / total:>12.3f}")
    print(f"{'  naive design (1 read per notification)':<40}{1.0:>12.3f}")
    print(f"{'  ratio to naive':<40}{requests / total:>12.3f}")
    print(f"{'delta rounds per mailbox':<40}{rounds / n:>12.2f}")
    conn.flushdb()
    return 0


def _subscribed(conn: redis.Redis) -> int:
    return sum(1 for _ in conn.scan_iter("exsync:subscription_of:*"))


def _quiet(conn: redis.Redis) -> bool:
    return conn.llen("rq:queue:exsync") == 0 and not any(conn.scan_iter("exsync:dirty:mailbox:*"))


def _notifications(conn: redis.Redis, per_mailbox: int) -> list[dict[str, str]]:
    items = []
    for key in conn.scan_iter("exsync:subscription_of:*"):
        sub_id = conn.get(key).decode()  # type: ignore[union-attr]
        user_id = key.decode().rsplit(":", 1)[1]
        state = conn.hget(f"exsync:subscription:{sub_id}", "client_state").decode()  # type: ignore[union-attr]
        items += [{"subscriptionId": sub_id, "clientState": state, "changeType": "updated",
                   "resource": f"Users/{user_id}/Events/AAMkAD{i}=", "tenantId": TENANT}
                  for i in range(per_mailbox)]  # fmt: skip
    random.Random(7).shuffle(items)
    return items


if __name__ == "__main__":
    sys.exit(main())
