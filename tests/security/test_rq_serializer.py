"""Finding 10: whoever can write to Redis must not run code in our processes through a job.

RQ pickled jobs, and unpickling runs code: a job planted in the queue ran whatever its pickle
said in the web app (/metrics reads the oldest waiting job), in `exsync status` and
`exsync failed list`, and in every worker. A worker also imported and ran any dotted path a job
named, and its callbacks'. Each planted job here leaves a marker file if it gets that far.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import time
import zlib
from datetime import UTC, datetime
from pathlib import Path

import redis
from rq.utils import utcformat

from core import store
from core.settings import load_settings
from tests.cli_support import invoke
from tests.harness import COCONUT_WEBHOOK_SECRET, TENANT
from webhooks.app import create_app

ROOT = Path(__file__).resolve().parents[2]
QUEUE = "exsync"
METRICS_TOKEN = "metrics-token-for-the-serializer-tests-0123"
BEARER = {"Authorization": f"Bearer {METRICS_TOKEN}"}
WORKER_ENV = {
    "EXSYNC_TENANT_ID": TENANT, "EXSYNC_CLIENT_ID": "exsync-test",
    "EXSYNC_COCONUT_URL": "http://127.0.0.1:1/api/v2/b2b", "EXSYNC_AUDIT_URL": "none",
}  # fmt: skip


class Gadget:
    """Unpickling this creates `marker`, then reads as `value`: what a pickle planted in Redis
    could do, unnoticed, in any process that reads it."""

    def __init__(self, marker: Path, value: object) -> None:
        self.marker, self.value = marker, value

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return eval, (f"(open({str(self.marker)!r}, 'w').close(), {self.value!r})[1]",)


def gadget(marker: Path, value: object) -> bytes:
    return pickle.dumps(Gadget(marker, value))


def job_gadget(marker: Path) -> dict[str, bytes]:
    """A job hash's data and meta as gadgets that read as a plain job: `len()`, no meta."""
    return {"data": gadget(marker, ("builtins.len", None, (), {})), "meta": gadget(marker, {})}


def call(function: str, *args: object, encoding: str) -> bytes:
    """A job's data naming `function`, as RQ's pickle or JSON serializer writes it."""
    if encoding == "pickle":
        return pickle.dumps((function, None, args, {}))
    return json.dumps([function, None, list(args), {}]).encode()


def plant(conn: redis.Redis, job_id: str, data: bytes, **fields: bytes | str) -> None:
    """A job written straight into Redis, as `enqueue` would leave it, and queued."""
    now = utcformat(datetime.now(UTC))
    conn.hset(f"rq:job:{job_id}", mapping={
        "data": zlib.compress(data), "origin": QUEUE, "status": "queued", "created_at": now,
        "enqueued_at": now, "description": job_id, "timeout": 60, **fields,
    })  # fmt: skip
    conn.rpush(f"rq:queue:{QUEUE}", job_id)
    conn.sadd("rq:queues", f"rq:queue:{QUEUE}")


def module(folder: Path, name: str, marker: Path) -> None:
    """A module whose import alone creates `marker`, on the path the worker imports from."""
    (folder / f"{name}.py").write_text(
        f"open({str(marker)!r}, 'w').close()\n\ndef run(*args, **kwargs):\n    pass\n"
    )


def test_a_metrics_scrape_never_unpickles_a_planted_job(
    tmp_path: Path, redis_url: str, redis_conn: redis.Redis
) -> None:
    marker = tmp_path / "unpickled"
    plant(redis_conn, "planted", **job_gadget(marker))
    settings = load_settings(
        redis_url=redis_url, coconut_webhook_secret=COCONUT_WEBHOOK_SECRET,
        metrics_token=METRICS_TOKEN,
    )  # fmt: skip

    answer = create_app(settings).test_client().get("/metrics", headers=BEARER)

    assert answer.status_code == 200
    assert not marker.exists(), "GET /metrics unpickled a job planted in Redis"


def test_exsync_status_and_failed_list_never_unpickle_a_planted_job(
    tmp_path: Path, redis_url: str, redis_conn: redis.Redis
) -> None:
    waiting, failed = tmp_path / "waiting-unpickled", tmp_path / "failed-unpickled"
    plant(redis_conn, "planted-waiting", **job_gadget(waiting))
    plant(redis_conn, "planted-failed", **job_gadget(failed), status="failed")
    redis_conn.lrem(f"rq:queue:{QUEUE}", 0, "planted-failed")
    redis_conn.zadd(f"rq:failed:{QUEUE}", {"planted-failed": 2**40})

    status = invoke(redis_url, "status", "--json")
    listed = invoke(redis_url, "failed", "list")

    assert not waiting.exists(), "`exsync status` unpickled a job planted in Redis"
    assert not failed.exists(), "`exsync failed list` unpickled a job planted in Redis"
    assert status.exit_code == 1 and json.loads(status.stdout)["queue"]["failed"] == 1
    assert listed.exit_code == 0 and listed.stdout.startswith("planted-failed\t")


def test_a_worker_never_unpickles_imports_or_runs_a_planted_job(
    tmp_path: Path, redis_url: str, redis_conn: redis.Redis
) -> None:
    """In either encoding: a pickle that runs code as it loads, `os.system`, a module that
    does its harm on import, and a failing job whose failure callback names such a module."""
    markers = {name: tmp_path / name for name in ("unpickled", "ran", "imported", "called")}
    module(tmp_path, "planted_job", markers["imported"])
    module(tmp_path, "planted_callback", markers["called"])
    plant(redis_conn, "gadget", **job_gadget(markers["unpickled"]))
    for encoding in ("pickle", "json"):
        shell = call("os.system", f"touch {markers['ran']}", encoding=encoding)
        plant(redis_conn, f"system-{encoding}", shell)
        plant(redis_conn, f"import-{encoding}", call("planted_job.run", encoding=encoding))
        failing = call("builtins.int", "not a number", encoding=encoding)
        plant(redis_conn, f"callback-{encoding}", failing,
              failure_callback_name="planted_callback.run")  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("EXSYNC_")}
    path = os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", str(ROOT))])
    env.update(WORKER_ENV, EXSYNC_REDIS_URL=redis_url, PYTHONPATH=path)

    # Not --burst: a burst's end waits up to 60 s on RQ's pubsub thread (docs/testing.md).
    worker = subprocess.Popen(
        [sys.executable, "-m", "exsync.cli", "worker", "--port", "0"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while refused(redis_conn) != PLANTED and worker.poll() is None:
            if time.monotonic() > deadline:
                break  # what it did instead is asserted below
            time.sleep(0.2)
        crashed = worker.poll() is not None
    finally:
        worker.terminate()
        _, stderr = worker.communicate(timeout=60)

    made = sorted(name for name, marker in markers.items() if marker.exists())
    assert made == [], f"a planted job got as far as: {made}\n{stderr[-3000:]}"
    assert not crashed, f"a planted job stopped the worker:\n{stderr[-3000:]}"
    assert refused(redis_conn) == PLANTED


PLANTED = {"gadget", "system-pickle", "system-json", "import-pickle", "import-json",
           "callback-pickle", "callback-json"}  # fmt: skip


def refused(conn: redis.Redis) -> set[str]:
    return {job.decode() for job in conn.zrange(f"rq:failed:{QUEUE}", 0, -1)}


def test_the_job_a_receiver_queues_is_stored_as_json(
    redis_url: str, redis_conn: redis.Redis
) -> None:
    """Not an attack: the format every process now writes (the arguments are ids)."""
    redis_conn.hset(store.subscription_key("s-1"), mapping={"user_id": "u-1", "client_state": "cs"})
    settings = load_settings(redis_url=redis_url, coconut_webhook_secret=COCONUT_WEBHOOK_SECRET)
    notification = {"value": [{"subscriptionId": "s-1", "clientState": "cs"}]}

    answer = create_app(settings).test_client().post("/webhooks/graph", json=notification)

    assert answer.status_code == 202
    (job_id,) = [job.decode() for job in redis_conn.lrange(f"rq:queue:{QUEUE}", 0, -1)]
    data = zlib.decompress(redis_conn.hget(f"rq:job:{job_id}", "data") or b"")
    assert json.loads(data) == ["workers.mailbox_sync.sync_mailbox", None, ["u-1"], {}]
    assert json.loads(redis_conn.hget(f"rq:job:{job_id}", "meta") or b"") == {"retries": 5}
