"""Coalesced jobs: at most one job per item queued, and no change that arrives mid-run missed.

A webhook is only a hint ("look again at this mailbox"), so a thousand hints for one item must
cost one or two runs, not a thousand. The protocol (DESIGN.md, "Coalescing"):

- the receiver sets the item's dirty flag, then makes sure a job is queued under the item's
  deterministic id; if that job is already running it queues one follow-up job instead;
- the job takes the item's lock, notes the flag's value before it reads, does one round, and
  clears the flag only if nobody changed it meanwhile (else it does another round);
- a follow-up that finds the flag clear has nothing to do.

The flag is a counter, not a boolean, and it is cleared only after a round completed: a worker
killed mid-round leaves it set, so the retried job still does the work.

Coconut says which version of an item a webhook announces, and sends two webhooks for one
reschedule (`rescheduled` and `updated`). The receiver keeps the newest version announced since
the round began (a hint that names none counts as newer than anything), and a round that read
at least that version may clear the flag although it moved: the hints that moved it announced
what the round already read, so one more round would read nothing new.

For the items people wait on (a mailbox, an appointment, an absence) the receiver also notes
when the oldest unread change was noticed; the round that reads it hands that time on to its
end, where it becomes the sync lag (core.metrics.SYNC_LAG, and per mailbox the lag gauge).

Two workers never work on one item at once (the lock), a killed worker's lock expires, and RQ's
retry requeues its job.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol

import redis
from redis.lock import Lock
from rq import Queue, Retry, get_current_job
from rq.exceptions import DeserializationError, DuplicateJobError, NoSuchJobError
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from core import store
from core.job_kinds import JobKind
from core.metrics import SYNC_LAG

log = logging.getLogger(__name__)

PENDING_STATES = {JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.DEFERRED}
LOCK_SECONDS = 20
MAX_ROUNDS = 5
# The first retry runs at once (an abandoned job must not wait for a scheduler), then back off.
RETRY_INTERVALS = [0, 5, 15, 60, 300]
# Items whose lag is measured, and the direction their changes travel.
LAG_DIRECTIONS = {"mailbox": "to_coconut", "appointment": "to_exchange", "absence": "to_exchange"}
NOTICED_TTL = 7 * 86_400
# Items whose hints may name the version they announce, and whose rounds return the version read.
VERSIONED_KINDS = frozenset({"appointment", "absence"})


class Queued(Protocol):
    """A job as it is queued: the function's dotted path and the item kind it coalesces
    (core.job_kinds.JobKind names every one the service has)."""

    @property
    def path(self) -> str: ...

    @property
    def kind(self) -> str: ...


# RQ pickles a job's data by default, and unpickling runs code: whoever can write to Redis
# would run it in every process that reads a job (a worker, /metrics, `exsync status`). Jobs
# travel as JSON instead; their arguments are ids (core.job_kinds), which JSON carries as is.
SERIALIZER = JSONSerializer
UNREADABLE = "<unreadable>"  # the function of a job whose data is not what `enqueue` writes


class UnregisteredJob(Exception):
    """A job names a function core.job_kinds does not list: the service did not queue it."""


class RegisteredJob(Job):
    """A job that runs only a function core.job_kinds lists. RQ imports whatever dotted path a
    job names, so a job planted in Redis could import and run anything; this one fails instead,
    without importing it, and is not retried."""

    def restore(self, raw_data: Any) -> None:
        super().restore(raw_data)
        # The service sets no callbacks or webhooks, so any found were planted: RQ would import
        # a callback's module, or call a webhook's URL, as the job ends.
        self._success_callback_name = self._failure_callback_name = None
        self._stopped_callback_name = None
        self.webhooks = []

    def _deserialize_data(self) -> None:
        """Data not shaped as `enqueue` writes it (a pickle, say) reads as a job of the
        UNREADABLE function: the worker fails it by name instead of crashing on it."""
        try:
            super()._deserialize_data()
            readable = (
                isinstance(self._func_name, str) and self._instance is None
                and isinstance(self._args, list) and isinstance(self._kwargs, dict)
            )  # fmt: skip
        except DeserializationError:
            readable = False
        if not readable:
            self._func_name, self._instance, self._args, self._kwargs = UNREADABLE, None, [], {}

    @property
    def func(self) -> Callable[..., Any]:
        if JobKind.of_path(self.func_name) is None:
            self.retries_left = None  # every retry would be refused alike
            why = (
                "its data is not a job as core.jobs writes it (JSON)"
                if self.func_name == UNREADABLE
                else f"{self.func_name!r} is not a job core.job_kinds lists"
            )
            raise UnregisteredJob(f"refused without importing anything: {why}")
        return super().func  # type: ignore[no-any-return]


def queue(name: str, conn: redis.Redis) -> Queue:
    """The service's queue as every process must see it: jobs in JSON, and only registered
    functions run. Whatever enqueues, fetches or runs jobs gets its queue here."""
    return Queue(name, connection=conn, serializer=SERIALIZER, job_class=RegisteredJob)


def fetch(job_id: str, conn: redis.Redis) -> RegisteredJob:
    """One job, read as JSON; raises NoSuchJobError."""
    return RegisteredJob.fetch(job_id, connection=conn, serializer=SERIALIZER)


def fetch_many(job_ids: Iterable[str], conn: redis.Redis) -> list[RegisteredJob | None]:
    """These jobs, read as JSON; None for each one gone."""
    return RegisteredJob.fetch_many(job_ids, connection=conn, serializer=SERIALIZER)  # type: ignore[return-value]


def job_id(kind: str, item: str, suffix: str = "") -> str:
    """RQ allows letters, digits, `_` and `-` only; callers pass Graph ids or numeric ids."""
    return f"{kind}-{item}{suffix}"


class JobPolicy:
    """Retries and timeout of every queued job: EXSYNC_JOB_RETRIES and EXSYNC_JOB_TIMEOUT, set
    once per process by `configure` (the web app and every command do)."""

    retries: int = len(RETRY_INTERVALS)
    timeout: int = 300


def configure(retries: int, timeout: int) -> None:
    JobPolicy.retries, JobPolicy.timeout = retries, timeout


def ensure_queued(
    queue: Queue,
    job: Queued,
    item: str,
    *,
    retries: int | None = None,
    timeout: int | None = None,
    also: Callable[[redis.client.Pipeline], object] | None = None,
    version: int | None = None,
    changes: int = 1,
) -> str:
    """Mark the item dirty and make sure a job will read it after now. Returns the job id used.

    `job` names its function by dotted path so that the web process never imports the workers
    (and with them the Graph and Coconut clients). `also` adds commands to the first round trip.
    `version`: the item's version the hint announces, when its source says (VERSIONED_KINDS
    only). `changes`: how many changes the hint stands for (the flag counts them; a burst is
    many). Raises
    redis.ConnectionError when Redis is down.
    """
    retries = JobPolicy.retries if retries is None else retries
    timeout = max(JobPolicy.timeout, timeout or 0)
    kind, func = job.kind, job.path
    conn = queue.connection
    first = job_id(kind, item)
    # The hot path, one round trip: mark dirty, then see whether the job already waits. A job
    # seen waiting has not read the flag yet (a worker marks it started before it reads).
    pipe = conn.pipeline(transaction=False)
    if also is not None:
        also(pipe)  # the caller's own bookkeeping rides along in the same round trip
    if kind in LAG_DIRECTIONS:
        pipe.set(store.noticed_key(kind, item), time.time(), nx=True, ex=NOTICED_TTL)
    if kind in VERSIONED_KINDS:  # before the flag moves: a round that sees the move sees this
        announced = float("inf") if version is None else float(version)
        pipe.zadd(store.announced_key(kind), {item: announced}, gt=True)
    pipe.incr(store.dirty_key(kind, item), changes)
    pipe.hget(Job.key_for(first), "status")
    status = pipe.execute()[-1]
    if status is not None and status.decode() in PENDING_STATES:
        return first
    for suffix in ("", "-followup"):
        candidate = job_id(kind, item, suffix)
        if _enqueue_unique(queue, func, candidate, item, retries, timeout):
            return candidate
        if _status(conn, candidate) in PENDING_STATES:
            return candidate
    # Both the job and its follow-up are running: the follow-up has not taken the lock yet
    # (the lock is exclusive), so it will still see the dirty flag set above.
    return job_id(kind, item, "-followup")


def _enqueue_unique(
    queue: Queue, func: str, candidate: str, item: str, retries: int, timeout: int
) -> bool:
    for _ in range(2):
        try:
            queue.enqueue(
                func,
                item,
                job_id=candidate,
                unique=True,
                result_ttl=0,
                failure_ttl=7 * 86_400,
                job_timeout=timeout,
                retry=Retry(max=retries, interval=RETRY_INTERVALS[: max(retries, 1)])
                if retries
                else None,
                meta={"retries": retries},  # RQ keeps only the retries left; attempts need both
            )
            return True
        except DuplicateJobError:
            status = _status(queue.connection, candidate)
            if status in PENDING_STATES or status == JobStatus.STARTED:
                return False
            # A finished, failed or stopped job of that id keeps its hash; it says nothing about
            # the new change, so it gives way (a failed one stays visible in the failed registry
            # under the history it was given there).
            _discard(queue.connection, candidate)
    return False


def _status(conn: redis.Redis, candidate: str) -> JobStatus | None:
    try:
        return fetch(candidate, conn).get_status(refresh=False)
    except NoSuchJobError:
        return None


def _discard(conn: redis.Redis, candidate: str) -> None:
    try:
        fetch(candidate, conn).delete(remove_from_queue=True)
    except NoSuchJobError:
        return


@contextmanager
def item_lock(conn: redis.Redis, kind: str, item: str) -> Iterator[Lock]:
    """Hold the item's lock for as long as the job runs, however long a round takes (a thread
    renews it); a killed worker stops renewing, so the lock frees itself within LOCK_SECONDS."""
    # Not thread-local: the keeper thread renews the lock the job's thread took.
    lock = conn.lock(
        store.lock_key(kind, item), timeout=LOCK_SECONDS, blocking_timeout=LOCK_SECONDS * 3,
        thread_local=False,
    )  # fmt: skip
    if not lock.acquire():
        raise LockBusy(f"{kind} {item} is locked by another worker")
    with _holding(lock):
        yield lock


@contextmanager
def _holding(lock: Lock) -> Iterator[None]:
    """Renew a lock taken while the block runs, then release it unless the block already let go
    of it (its token cleared, as redis-py's own release leaves it)."""
    done = threading.Event()
    keeper = threading.Thread(target=_keep, args=(lock, done), daemon=True)
    keeper.start()
    try:
        yield
    finally:
        done.set()
        keeper.join()
        if lock.local.token is not None:
            try:
                lock.release()
            except redis.exceptions.LockError:
                log.warning("lock.lost", extra={"lock": lock.name})


@contextmanager
def item_locks(conn: redis.Redis, items: list[tuple[str, str]]) -> Iterator[None]:
    """Hold the locks of many items at once (a job that writes many items of one mailbox), each
    the same lock `item_lock` takes. Taken in one order (sorted), so two holders of overlapping
    sets never wait on each other in a circle; one thread renews them all. Raises LockBusy,
    having released what it took, when one stays locked longer than a job may wait."""
    held: list[Lock] = []
    done = threading.Event()
    keeper = threading.Thread(target=_keep_all, args=(held, done), daemon=True)
    keeper.start()
    try:
        for kind, item in sorted(set(items)):
            lock = conn.lock(
                store.lock_key(kind, item), timeout=LOCK_SECONDS,
                blocking_timeout=LOCK_SECONDS * 3, thread_local=False,
            )  # fmt: skip
            if not lock.acquire():
                raise LockBusy(f"{kind} {item} is locked by another worker")
            held.append(lock)
        yield
    finally:
        done.set()
        keeper.join()
        for lock in held:
            try:
                lock.release()
            except redis.exceptions.LockError:
                log.warning("lock.lost", extra={"lock": lock.name})


def _keep(lock: Lock, done: threading.Event) -> None:
    _keep_all([lock], done)


def _keep_all(locks: list[Lock], done: threading.Event) -> None:
    while not done.wait(LOCK_SECONDS / 3):
        for lock in list(locks):
            try:
                lock.extend(LOCK_SECONDS, replace_ttl=True)
            except redis.exceptions.RedisError:
                log.warning("lock.renew_failed", exc_info=True)


class LockBusy(Exception):
    """Another worker held the item's lock for longer than a job may wait; RQ retries the job."""


_begin_script = """
redis.call('ZREM', KEYS[2], ARGV[1])
return redis.call('GET', KEYS[1])
"""


def _begin_round(conn: redis.Redis, kind: str, item: str) -> bytes | None:
    """The flag's value as the round begins. A versioned item's announced version starts
    afresh: every hint so far told of a change this round is about to read."""
    if kind not in VERSIONED_KINDS:
        return conn.get(store.dirty_key(kind, item))  # type: ignore[return-value]
    keys = [store.dirty_key(kind, item), store.announced_key(kind)]
    return conn.eval(_begin_script, len(keys), *keys, item)  # type: ignore[return-value]


_clear_script = """
local now = redis.call('GET', KEYS[1])
local covered = now == ARGV[1]
if not covered and ARGV[2] ~= '' then
    local announced = redis.call('ZSCORE', KEYS[2], ARGV[3])
    covered = announced and announced ~= 'inf' and tonumber(announced) <= tonumber(ARGV[2])
end
if not covered then return 0 end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[3])
return 1
"""


def _clear(
    conn: redis.Redis, kind: str, item: str, seen: bytes | None, read_version: int | None
) -> bool:
    """Clear the flag if no hint came since `seen`, or every hint announced at most the version
    the round read. The announced version goes with the flag: it only speaks of its hints."""
    keys = [store.dirty_key(kind, item), store.announced_key(kind)]
    version = "" if read_version is None else str(read_version)
    return bool(conn.eval(_clear_script, len(keys), *keys, seen or b"", version, item))


def run_coalesced(
    conn: redis.Redis,
    job: Queued,
    item: str,
    round_: Callable[[Lock], Any],
    *,
    settle: float = 0.0,
) -> int:
    """Run `round_` under the item's lock until no change arrived during the last round.

    A change that lands during a round bumps the flag, so clearing it fails and earns one more
    round, unless the round of a VERSIONED_KINDS item returned a version at least as new as every
    hint announced. With `settle`, a round that finds BURST_CHANGES or more changes since the
    last read (the flag counts changes) first waits, `settle` seconds at a time, while changes
    keep arriving faster than BURST_GOING an interval (at most SETTLE_LIMIT seconds): Graph
    delivers a burst over a second or two, and reading in the middle of it would only earn the
    next round. A trickle of changes, however steady, is read at once, so the wait never holds a
    worker that other items' changes need. Returns how many rounds ran.
    """
    kind = job.kind
    dirty = store.dirty_key(kind, item)
    lock = _coalesced_lock(conn, kind, item)
    if lock is None:
        return 0
    rounds = 0
    last_read = 0  # the flag's value when the previous round began to read
    with _holding(lock):
        while rounds < MAX_ROUNDS and lock.local.token is not None:
            seen = _begin_round(conn, kind, item)
            if seen is None:
                _release_if_clean(conn, lock, dirty)
                continue
            if settle and int(seen) - last_read >= BURST_CHANGES:
                seen = _settled(conn, dirty, seen, settle)
            last_read = int(seen)
            rounds += 1
            noticed = _take_noticed(conn, kind, item)
            read = round_(lock)
            version = read if kind in VERSIONED_KINDS and isinstance(read, int) else None
            _clear(conn, kind, item, seen, version)
            if noticed is not None:
                conn.delete(store.reading_key(kind, item))
                SYNC_LAG.labels(direction=LAG_DIRECTIONS[kind]).observe(time.time() - noticed)
        finished = lock.local.token is None
    if not finished:  # MAX_ROUNDS and still dirty: let the queue's other items go first
        log.info("coalesce.more_rounds_needed", extra={"kind": kind, "item": item})
        running = get_current_job(conn)
        if running is not None:
            ensure_queued(queue(running.origin, conn), job, item)
    return rounds


COALESCED = "coalesced:"  # the item lock's token while run_coalesced holds it


def _coalesced_lock(conn: redis.Redis, kind: str, item: str) -> Lock | None:
    """The item's lock; None when a live coalesced run holds it. That run reads the flag
    again before it lets go (_release_if_clean), so a job that finds it busy has nothing to
    wait for: waiting would only hold a worker that other items need. A holder that stopped
    renewing may be dead, and its job's retry is the one that must wait, so this one waits
    too; so does a job that finds another kind of holder (core.jobs.item_locks)."""
    name = store.lock_key(kind, item)
    lock = conn.lock(name, timeout=LOCK_SECONDS, thread_local=False)
    token = f"{COALESCED}{uuid.uuid4().hex}"
    deadline = time.monotonic() + LOCK_SECONDS * 3
    while True:
        if lock.acquire(blocking=False, token=token):
            return lock
        pipe = conn.pipeline(transaction=False)
        pipe.get(name)
        pipe.pttl(name)
        holder, ttl = pipe.execute()
        if holder is not None and holder.startswith(COALESCED.encode()) and ttl > LIVE_TTL_MS:
            return None
        if time.monotonic() > deadline:
            raise LockBusy(f"{kind} {item} is locked by another worker")
        time.sleep(0.05)


# A holder renews its lock to LOCK_SECONDS every third of it: one whose lock has less left
# than this has missed a renewal.
LIVE_TTL_MS = LOCK_SECONDS * 1000 // 2

_release_if_clean_script = """
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) return 1 end
return -1
"""


def _release_if_clean(conn: redis.Redis, lock: Lock, dirty: str) -> None:
    """Let go of the item unless a change came after the last round, in one step: a job that
    found the lock busy and left counts on this. Once let go, the lock's token is cleared."""
    outcome = conn.eval(_release_if_clean_script, 2, lock.name, dirty, lock.local.token)
    if outcome == -1:
        log.warning("lock.lost", extra={"lock": lock.name})
    if outcome != 0:
        lock.local.token = None


_take_noticed_script = """
local noticed = redis.call('GET', KEYS[1])
local since = redis.call('GET', KEYS[2])
if noticed then
    redis.call('DEL', KEYS[1])
    if not since or tonumber(noticed) < tonumber(since) then since = noticed end
end
if since then redis.call('SET', KEYS[2], since, 'EX', ARGV[1]) end
return since
"""


def _take_noticed(conn: redis.Redis, kind: str, item: str) -> float | None:
    """When the oldest change this round reads was noticed. It moves from `noticed` to
    `reading` (changes noticed from now on start a new `noticed`), and stays in `reading` if
    the round dies, so the retried round still counts from the first notice."""
    if kind not in LAG_DIRECTIONS:
        return None
    keys = [store.noticed_key(kind, item), store.reading_key(kind, item)]
    since = conn.eval(_take_noticed_script, len(keys), *keys, NOTICED_TTL)
    return float(since) if since is not None else None


SETTLE_LIMIT = 10.0
BURST_CHANGES = 10  # changes since the last read that make a round wait for the rest
BURST_GOING = 5  # changes within one settle interval that say the burst is still arriving


def _settled(conn: redis.Redis, dirty: str, seen: bytes, settle: float) -> bytes:
    """The flag's value once fewer than BURST_GOING changes came in `settle` seconds (or
    SETTLE_LIMIT passed). Only this job clears the flag while it holds the item's lock."""
    deadline = time.monotonic() + SETTLE_LIMIT
    while time.monotonic() < deadline:
        time.sleep(settle)
        now = conn.get(dirty)
        if now is None or int(now) - int(seen) < BURST_GOING:
            return now or seen
        seen = now
    return seen
