"""`exsync worker`: an RQ worker that runs jobs in its own process and gives up dead peers fast.

RQ's default worker forks a child per job; ours must not, because the Graph client and its
event loop live for the whole process (workers.context). RQ's SimpleWorker, though, marks a
job as running for its whole timeout plus a minute and cleans up every ten minutes, so a
SIGKILLed worker's job would wait that long. Here a thread renews the running job's heartbeat
while it runs, with a short TTL, and every worker looks for abandoned jobs every few seconds:
a killed worker's job is retried (RQ's Retry) within about half a minute, and its item lock
has expired by then (core.jobs).

RQ's work loop quits on any Redis error outside the dequeue (a heartbeat, a job's bookkeeping),
so a Redis restart would end every worker at once. `run_worker` waits for Redis to answer
again and starts over with a fresh worker; the job that was running when Redis went is
retried like a killed worker's.

Every line logged while a job runs carries its `job_id` and `job` (core.logs), and a job that
raises is published as a `sync.failed` audit event with its attempt and whether RQ retries it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType

import redis
from prometheus_client import start_http_server
from rq import Queue, SimpleWorker
from rq.executions import Execution
from rq.job import Job
from rq.worker import WorkerStatus

from core import audit, jobs, logs
from core.metrics import JOB_SECONDS
from core.settings import Settings
from workers.context import WorkerContext, install

HEARTBEAT_TTL = 30
MAINTENANCE_SECONDS = 10

log = logging.getLogger(__name__)


# Asked to stop (SIGTERM, SIGINT), as opposed to RQ's loop quitting on an error.
_stopping = threading.Event()


# How long the worker's command thread (RQ's pub/sub channel) waits for a message at a time.
COMMAND_WAIT_SECONDS = 1.0


class PromptWorker(SimpleWorker):
    """RQ's SimpleWorker, stopping promptly: RQ's command thread waits 60 s at a time for a
    message, and with redis-py 8.2 closing its connection as the worker stops waits that wait
    out, so every stop (SIGTERM, a burst's end) could take a minute. It waits 1 s here."""

    def subscribe(self) -> None:
        self.pubsub = self.connection.pubsub()
        self.pubsub.subscribe(**{self.pubsub_channel_name: self.handle_payload})
        self.pubsub_thread = self.pubsub.run_in_thread(
            sleep_time=COMMAND_WAIT_SECONDS, daemon=True,
            exception_handler=self._pubsub_exception_handler,
        )  # fmt: skip


class ExsyncWorker(PromptWorker):
    def request_stop(self, signum, frame):  # type: ignore[no-untyped-def]
        _stopping.set()
        try:
            super().request_stop(signum, frame)
        except redis.RedisError:
            return  # Redis is away: nothing runs, so there is nothing to let finish first

    def _set_ip_address(self, connection: redis.Redis) -> None:
        """The address is only shown in RQ's dashboards; fakeredis (the demo's embedded Redis)
        answers CLIENT INFO in a form redis-py cannot parse, which must not stop the worker."""
        try:
            super()._set_ip_address(connection)
        except ValueError:
            self.ip_address = "unknown"

    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        return HEARTBEAT_TTL

    def execute_job(self, job: Job, queue: Queue) -> None:
        self._forget_dead_executions(job)
        execution = self.prepare_execution(job)
        started = time.monotonic()
        with logs.bound(job_id=job.id, job=job.func_name), self._heartbeat(execution, queue):
            ok = self.perform_job(job, queue, execution)
        JOB_SECONDS.labels(job=job.func_name, result="ok" if ok else "failed").observe(
            time.monotonic() - started
        )
        self.set_state(WorkerStatus.IDLE)

    def _forget_dead_executions(self, job: Job) -> None:
        """A killed worker's execution outlives its data in the job's execution registry by a
        minute (RQ 3 lists it 60 s past its TTL), and RQ fails the retried job when it cannot
        load it; drop such leftovers before the retry runs."""
        registry = job.execution_registry
        for execution_id in self.connection.zrange(registry.key, 0, -1):
            execution = Execution(execution_id.decode(), job.id, connection=self.connection)
            if not self.connection.exists(execution.key):
                self.connection.zrem(registry.key, execution_id)

    @contextmanager
    def _heartbeat(self, execution: Execution, queue: Queue) -> Iterator[None]:
        done = threading.Event()

        def beat() -> None:
            while not done.wait(HEARTBEAT_TTL / 3):
                with self.connection.pipeline() as pipe:
                    execution.heartbeat(queue.started_job_registry, HEARTBEAT_TTL, pipe)
                    pipe.execute()

        thread = threading.Thread(target=beat, daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join()


def publish_failure(
    job: Job, exc_type: type[BaseException], exc: BaseException, _tb: TracebackType | None
) -> bool:
    """RQ exception handler: the failure as an audit event. Called before RQ decides on the
    retry, so `retries_left` still counts this attempt. Only the error's class, HTTP status and
    service error code go out: messages may quote a response body."""
    retries = job.meta.get("retries")
    left = job.retries_left or 0
    audit.emit(
        "sync.failed",
        job_id=job.id,
        function=job.func_name,
        item_id=str(job.args[0]) if job.args else None,
        attempt=retries - left + 1 if isinstance(retries, int) else None,
        will_retry=job.should_retry,
        error=exc_type.__name__,
        status=_status(exc),
        code=_code(exc),
    )
    return True  # let RQ's own handling go on


def _status(exc: BaseException) -> int | None:
    status = getattr(exc, "response_status_code", None) or getattr(exc, "status", None)
    return status if isinstance(status, int) else None


def _code(exc: BaseException) -> str | None:
    """Graph's error code (ErrorItemNotFound...) or Coconut's: a fixed vocabulary, no data."""
    error = getattr(exc, "error", None)
    code = getattr(error, "code", None) if error is not None else getattr(exc, "code", None)
    return code if isinstance(code, str) else None


def run_worker(settings: Settings, *, host: str, port: int, burst: bool = False) -> int:
    ctx = WorkerContext(settings)
    install(ctx)
    logs.redact(*settings.secrets)
    if port:
        start_http_server(port, addr=host)
    while True:
        worker = None
        try:
            # RQ's worker asks Redis about itself as it is made: a worker started (or
            # restarted by its supervisor) while Redis is down waits for it like any other.
            worker = ExsyncWorker(
                [ctx.queue],
                connection=ctx.redis,
                serializer=jobs.SERIALIZER,
                job_class=jobs.RegisteredJob,  # runs only what core.job_kinds lists
                worker_ttl=HEARTBEAT_TTL,
                maintenance_interval=MAINTENANCE_SECONDS,
                exception_handlers=[publish_failure],
            )
            worker.work(burst=burst, with_scheduler=True)
        except redis.RedisError as exc:
            if burst:
                raise  # a burst that could not finish its queue did not succeed
            # Raised from RQ's own teardown, which needs the Redis that just went away.
            log.warning("worker.redis_lost", extra={"error": type(exc).__name__})
            if worker is not None and worker.scheduler is not None:
                worker.stop_scheduler()
        if burst or _stopping.is_set():
            return 0
        log.warning("worker.restarting", extra={"worker": worker.name if worker else None})
        if not _await_redis(ctx.redis):
            return 0


def _await_redis(conn: redis.Redis) -> bool:
    """However long the outage: a supervisor stops a worker, Redis going away does not.
    False when asked to stop meanwhile."""
    while not _stopping.is_set():
        try:
            return bool(conn.ping())
        except redis.RedisError:
            _stopping.wait(1)
    return False
