"""Ingest: webhook POSTs per second into `exsync web`, beside a bare Flask app, same gunicorn.

    .venv/bin/python bench/ingest.py [--seconds 10] [--connections 32] [--redis-url URL]

Runs wrk (Debian's `wrk`) against four targets in one run, so the machine's noise hits them
alike: the bare app (202, nothing else), Graph change notifications (realistic bodies for 100
subscribed mailboxes, valid clientState), Coconut webhooks (each signed, with its own delivery
id, over 1,000 appointments), then the bare app again. Prints requests/s, p50 and p99 latency
and each endpoint's ratio to the mean of the two bare runs; then the two endpoints again with
each connection paced to 70% of the bare rate in all (the issue's latency goal), where wrk
counts latency from each request it sent.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from exsync.cli import ACCESS_LOG_FORMAT  # noqa: E402
from exsync.processes import Process, wait_until  # noqa: E402
from tests.harness import free_port  # noqa: E402
from webhooks.coconut_signature import sign  # noqa: E402

WEBHOOK_SECRET = "bench-webhook-secret-0123456789abcdef"
TENANT = "8c3f5a52-6b0e-4c1f-9a57-2f1d0c5e7b10"
MAILBOXES = 100


def gunicorn(name: str, app: str, port: int, env: dict[str, str], tmp: Path) -> Process:
    """The production configuration of `exsync web`: gthread, 2 workers x 4 threads, an access
    line per request."""
    argv = [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", "2",
            "--worker-class", "gthread", "--threads", "4", "--timeout", "30",
            "--access-logfile", str(tmp / f"{name}-access.log"),
            "--access-logformat", ACCESS_LOG_FORMAT, app]  # fmt: skip
    proc = Process(name, argv, env, tmp / f"{name}.log").start()
    wait_until(lambda: _answers(port), 30, what=name)
    return proc


def _answers(port: int) -> bool:
    try:
        return httpx.post(f"http://127.0.0.1:{port}/webhooks/x", timeout=1).status_code < 500
    except httpx.HTTPError:
        return False


def graph_bodies(conn: redis.Redis) -> list[str]:
    """One notification per mailbox, as Graph sends them, for subscriptions stored as ours."""
    bodies = []
    for _ in range(MAILBOXES):
        sub_id, user_id, state = str(uuid.uuid4()), str(uuid.uuid4()), secrets.token_urlsafe(32)
        record = {"user_id": user_id, "client_state": state, "expires_at": time.time() + 86400}
        conn.hset(f"exsync:subscription:{sub_id}", mapping=record)
        bodies.append(json.dumps({"value": [{
            "subscriptionId": sub_id, "subscriptionExpirationDateTime": "2030-01-01T00:00:00Z",
            "changeType": "updated", "resource": f"Users/{user_id}/Events/AAMkAGI2TG93AAA=",
            "resourceData": {"@odata.type": "#Microsoft.Graph.Event", "@odata.id":
                             f"Users/{user_id}/Events/AAMkAGI2TG93AAA=", "@odata.etag":
                             'W/"DwAAABYAAADP8WsB8eaqR5M3L6yZ7xqGAABm1uIu"',
                             "id": "AAMkAGI2TG93AAA="},
            "clientState": state, "tenantId": TENANT,
        }]}))  # fmt: skip
    return bodies


def coconut_requests(count: int) -> list[tuple[dict[str, str], str]]:
    stamp = str(int(time.time()))
    out = []
    for n in range(count):
        body = json.dumps({"type": "appointment.updated", "created_at": "2030-01-01T00:00:00Z",
                           "data": {"type": "appointments", "id": str(1 + n % 1000),
                                    "attributes": {"status": "scheduled"}}})  # fmt: skip
        delivery_id = f"bench-{uuid.uuid4().hex}"
        signature = sign(WEBHOOK_SECRET, int(stamp), delivery_id, body.encode())
        headers = {"Content-Type": "application/json", "X-Coconut-Timestamp": stamp,
                   "X-Coconut-Delivery-Id": delivery_id,
                   "X-Coconut-Signature": signature}  # fmt: skip
        out.append((headers, body))
    return out


def lua_script(
    path: Path, requests: list[tuple[dict[str, str], str]], delay_ms: float | None = None
) -> None:
    """A wrk script that cycles through pre-built requests (wrk has no HMAC of its own), each
    connection waiting `delay_ms` before its next request when given."""
    lines = ["local reqs = {}"]
    for headers, body in requests:
        lines.append(
            f"reqs[#reqs + 1] = wrk.format('POST', nil, {_lua_table(headers)}, {_lua(body)})"
        )
    lines.append("local i = 0")
    lines.append("request = function() i = i % #reqs + 1; return reqs[i] end")
    if delay_ms is not None:
        lines.append(f"delay = function() return {delay_ms:.3f} end")
    path.write_text("\n".join(lines))


def _lua(text: str) -> str:
    return "[==[" + text + "]==]"


def _lua_table(headers: dict[str, str]) -> str:
    # A space after "[": "[[" would open a Lua long string.
    return "{" + ", ".join(f"[ {_lua(k)} ] = {_lua(v)}" for k, v in headers.items()) + "}"


def wrk(url: str, script: Path, seconds: int, connections: int) -> dict[str, float]:
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    return {"rps": rate, "p50": _ms(out, "50%"), "p99": _ms(out, "99%"),
            "errors": float(non2xx.group(1)) if non2xx else 0.0}  # fmt: skip


def _ms(out: str, label: str) -> float:
    value, unit = re.search(rf"{label}\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument(
        "--redis-url", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/9")
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("bench/ingest.py needs wrk (apt-get install wrk)")
    tmp = Path(tempfile.mkdtemp(prefix="exsync-bench-"))
    conn = redis.Redis.from_url(args.redis_url)
    conn.flushdb()
    env = {k: v for k, v in os.environ.items() if not k.startswith("EXSYNC_")}
    env.update(EXSYNC_REDIS_URL=args.redis_url, EXSYNC_COCONUT_WEBHOOK_SECRET=WEBHOOK_SECRET,
               EXSYNC_SECRET_KEY="YmVuY2gta2V5LWJlbmNoLWtleS1iZW5jaC1rZXktYmU=",
               EXSYNC_TENANT_ID=TENANT, EXSYNC_LOG_LEVEL="WARNING",
               PROMETHEUS_MULTIPROC_DIR=str(tmp / "metrics"), PYTHONPATH=str(ROOT))  # fmt: skip
    (tmp / "metrics").mkdir()
    bare_port, web_port = free_port(), free_port()
    procs = [
        gunicorn("bare", "bench.bare_app:app", bare_port, env, tmp),
        gunicorn("web", "webhooks.app:create_app()", web_port, env, tmp),
    ]
    try:
        graph = [({"Content-Type": "application/json"}, b) for b in graph_bodies(conn)]
        scripts = {name: tmp / f"{name}.lua" for name in ("graph", "coconut", "coconut-paced")}
        lua_script(scripts["graph"], graph)
        lua_script(scripts["coconut"], coconut_requests(args.seconds * 4000))
        bare_url = f"http://127.0.0.1:{bare_port}/webhooks/graph"
        graph_url = f"http://127.0.0.1:{web_port}/webhooks/graph"
        coconut_url = f"http://127.0.0.1:{web_port}/webhooks/coconut"
        runs = [
            ("bare Flask 202 (before)", bare_url, scripts["graph"]),
            ("Graph notifications", graph_url, scripts["graph"]),
            ("Coconut webhooks", coconut_url, scripts["coconut"]),
            ("bare Flask 202 (after)", bare_url, scripts["graph"]),
        ]
        results = {
            name: wrk(url, script, args.seconds, args.connections) for name, url, script in runs
        }
        bare = (
            results["bare Flask 202 (before)"]["rps"] + results["bare Flask 202 (after)"]["rps"]
        ) / 2
        # The latency goal is set at 70% of the bare app's rate: each connection paced to it.
        delay_ms = args.connections * 1000 / (0.7 * bare)
        lua_script(scripts["graph"], graph, delay_ms)
        lua_script(scripts["coconut-paced"], coconut_requests(args.seconds * 4000), delay_ms)
        for name, url, script in (
            ("Graph, paced to 0.7 bare", graph_url, scripts["graph"]),
            ("Coconut, paced to 0.7 bare", coconut_url, scripts["coconut-paced"]),
        ):
            results[name] = wrk(url, script, args.seconds, args.connections)
    finally:
        for proc in procs:
            proc.stop()
    print(f"ingest: wrk -t2 -c{args.connections} -d{args.seconds}s, gunicorn gthread 2x4, "
          f"{MAILBOXES} mailboxes / 1,000 appointments; paced runs offer "
          f"{0.7 * bare:.0f} req/s")  # fmt: skip
    print(f"{'target':<28}{'req/s':>10}{'ratio':>8}{'p50 ms':>9}{'p99 ms':>9}{'non-2xx':>9}")
    for name, r in results.items():
        print(f"{name:<28}{r['rps']:>10.0f}{r['rps'] / bare:>8.2f}{r['p50']:>9.2f}"
              f"{r['p99']:>9.2f}{r['errors']:>9.0f}")  # fmt: skip
    marked = sum(1 for _ in conn.scan_iter("exsync:dirty:*"))
    print(f"items marked dirty, one queued job each: {marked}")
    conn.flushdb()
    return 0


if __name__ == "__main__":
    sys.exit(main())
