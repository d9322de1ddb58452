"""The whole system for a chaos run, on its own `redis-server` with AOF, and hands that break it.

Unlike the end-to-end tests' shared Redis, this one can be killed and restarted: it appends
every write and fsyncs each (`appendfsync always`), so what the web app accepted before a
SIGKILL is there when it comes back, exactly as the README asks of production. The run acts as
the supervisor a deployment has (systemd, compose's restart policy): a worker it kills is
replaced moments later; any process that dies on its own is a finding.
"""

from __future__ import annotations

import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis
from rq import Worker

from exsync.processes import Process, wait_until
from tests.harness import System, free_port

# The scheduler's safety nets would hide a lost webhook: they stay off during a run, which
# runs them itself once it has checked that every accepted notification was applied.
QUIET_NETS = {
    "EXSYNC_SAFETY_NET_SECONDS": "86400",
    "EXSYNC_RECONCILE_SECONDS": "86400",
    "EXSYNC_COCONUT_RECONCILE_SECONDS": "86400",
    "EXSYNC_SILENCE_SECONDS": "86400",
}


@dataclass
class ChaosSystem(System):
    """`System` plus its own Redis, and faults that need a process: kill, restart, replace."""

    redis_port: int = 0
    spare_index: int = 100  # replacement workers are worker-101, worker-102, ...

    def __post_init__(self) -> None:
        super().__post_init__()
        self.redis_port = free_port()
        self.redis_url = f"redis://127.0.0.1:{self.redis_port}/0"
        self.redis_dir = self.tmp / "redis"
        self.redis_dir.mkdir(parents=True, exist_ok=True)

    def start(self) -> ChaosSystem:
        self._start_redis()
        super().start()
        return self

    def _start_redis(self) -> None:
        server = shutil.which("redis-server")
        if server is None:
            raise RuntimeError("the chaos run needs redis-server on PATH")
        proc = Process(
            "redis",
            [
                server,
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.redis_port),
                "--dir",
                str(self.redis_dir),
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ],
            self.env,
            self.tmp / "redis.log",
        )
        # First in the table: stop() goes in reverse, so Redis stops last.
        self.processes = {"redis": proc, **self.processes}
        proc.start()
        wait_until(self._redis_answers, 20, what="the chaos run's redis-server")

    def _redis_answers(self) -> bool:
        try:
            return bool(redis.Redis.from_url(self.redis_url, socket_timeout=1).ping())
        except redis.RedisError:
            return False

    # -- faults that need a process ---------------------------------------------------------
    def restart_redis(
        self, down_seconds: float, while_down: Callable[[], object] | None = None
    ) -> None:
        """SIGKILL Redis (no clean shutdown), leave it down a moment (doing `while_down`),
        start it on its AOF."""
        self.kill("redis")
        if while_down is not None:
            while_down()
        time.sleep(down_seconds)
        old = self.processes["redis"]
        self.processes["redis"] = Process("redis", old.argv, self.env, old.log_path).start()
        wait_until(self._redis_answers, 30, what="redis-server back on its AOF")

    def restart_web(self) -> None:
        """A deploy: SIGTERM gunicorn (in-flight requests finish), start it again."""
        self.restart("web")
        wait_until(self._web_ready, 30, what="web back after a restart")

    def kill_busy_worker(self, wait: float = 3.0) -> str | None:
        """SIGKILL a worker while it runs a job (the name of the one killed), or None when
        none got busy within `wait` seconds; a replacement starts as a supervisor's would."""
        conn = redis.Redis.from_url(self.redis_url)
        deadline = time.monotonic() + wait
        victim = None
        while victim is None and time.monotonic() < deadline:
            victim = self._busy_worker(conn)
            if victim is None:
                time.sleep(0.02)
        conn.close()
        if victim is None:
            return None
        self.kill(victim)
        self.spare_index += 1
        self.start_worker(self.spare_index)
        return victim

    def _busy_worker(self, conn: redis.Redis) -> str | None:
        busy = {w.pid for w in Worker.all(connection=conn) if w.get_current_job_id()}
        for name, proc in self.processes.items():
            pid = proc.popen.pid if proc.popen is not None else None
            if name.startswith("worker-") and proc.running and pid in busy:
                return name
        return None

    def kill(self, name: str) -> None:
        proc = self.processes[name]
        proc.signal(signal.SIGKILL)
        if proc.popen is not None:
            proc.popen.wait(10)
        if name.startswith("worker-"):
            del self.processes[name]
            self.processes[f"killed-{name}"] = proc

    def dead_unexpectedly(self) -> list[str]:
        """Processes that ended without being told to (the run replaces or restarts each one
        it kills)."""
        return [
            name
            for name, proc in self.processes.items()
            if not proc.running and not name.startswith("killed-")
        ]
