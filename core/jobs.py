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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import redis
from redis.lock import Lock
from rq import Queue, Retry
from rq.exceptions import DuplicateJobError, NoSuchJobError
from rq.job import Job, JobStatus

from core import store
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
    func: str,
    kind: str,
    item: str,
    *,
    retries: int | None = None,
    timeout: int | None = None,
    also: Callable[[redis.client.Pipeline], object] | None = None,
) -> str:
    """Mark the item dirty and make sure a job will read it after now. Returns the job id used.

    `func` is a dotted path so that the web process never imports the workers (and with them the
    Graph and Coconut clients). `also` adds commands to the first round trip. Raises
    redis.ConnectionError when Redis is down.
    """
    retries = JobPolicy.retries if retries is None else retries
    timeout = max(JobPolicy.timeout, timeout or 0)
    conn = queue.connection
    first = job_id(kind, item)
    # The hot path, one round trip: mark dirty, then see whether the job already waits. A job
    # seen waiting has not read the flag yet (a worker marks it started before it reads).
    pipe = conn.pipeline(transaction=False)
    if also is not None:
        also(pipe)  # the caller's own bookkeeping rides along in the same round trip
    if kind in LAG_DIRECTIONS:
        pipe.set(store.noticed_key(kind, item), time.time(), nx=True, ex=NOTICED_TTL)
    pipe.incr(store.dirty_key(kind, item))
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
        return Job.fetch(candidate, connection=conn).get_status(refresh=False)
    except NoSuchJobError:
        return None


def _discard(conn: redis.Redis, candidate: str) -> None:
    try:
        Job.fetch(candidate, connection=conn).delete(remove_from_queue=True)
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
    done = threading.Event()
    keeper = threading.Thread(target=_keep, args=(lock, done), daemon=True)
    keeper.start()
    try:
        yield lock
    finally:
        done.set()
        keeper.join()
        try:
            lock.release()
        except redis.exceptions.LockError:
            log.warning("lock.lost", extra={"kind": kind, "item": item})


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


_clear_unless_changed_script = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def _clear_unless_changed(keys: list[str], args: list[bytes], client: redis.Redis) -> None:
    client.eval(_clear_unless_changed_script, len(keys), *keys, *args)


def run_coalesced(
    conn: redis.Redis,
    kind: str,
    item: str,
    round_: Callable[[Lock], Any],
    *,
    settle: float = 0.0,
) -> int:
    """Run `round_` under the item's lock until no change arrived during the last round.

    A change that lands during a round bumps the flag, so clearing it fails and earns one more
    round. With `settle`, a round that starts amid a burst (the flag counts more than one
    change, or changes arrived during the previous round) first waits until the flag stopped
    moving for that long (at most SETTLE_LIMIT seconds): Graph delivers a burst over a second
    or two, and reading in the middle of it would only earn the next round. A lone change is
    read at once. Returns how many rounds ran.
    """
    dirty = store.dirty_key(kind, item)
    rounds = 0
    with item_lock(conn, kind, item) as lock:
        while rounds < MAX_ROUNDS:
            seen = conn.get(dirty)
            if seen is None:
                break
            recent = store.key("recent", kind, item)
            if settle and (rounds or int(seen) > 1 or conn.exists(recent)):
                # Several changes, or a round moments ago (a follow-up job amid the same
                # burst): let the burst finish first. A lone change is read at once.
                seen = _settled(conn, dirty, settle)
            rounds += 1
            noticed = _take_noticed(conn, kind, item)
            round_(lock)
            _clear_unless_changed(keys=[dirty], args=[seen], client=conn)
            if noticed is not None:
                conn.delete(store.reading_key(kind, item))
                SYNC_LAG.labels(direction=LAG_DIRECTIONS[kind]).observe(time.time() - noticed)
            if settle:
                conn.set(recent, 1, px=int(BURST_WINDOW * 1000))
        if rounds == MAX_ROUNDS and conn.exists(dirty):
            log.info("coalesce.more_rounds_needed", extra={"kind": kind, "item": item})
    return rounds


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
BURST_WINDOW = 1.0  # a change within this long after a round belongs to the same burst


def _settled(conn: redis.Redis, dirty: str, settle: float) -> bytes | None:
    """The flag's value once it has not changed for `settle` seconds (or SETTLE_LIMIT passed)."""
    deadline = time.monotonic() + SETTLE_LIMIT
    seen = conn.get(dirty)
    while seen is not None and time.monotonic() < deadline:
        time.sleep(settle)
        now = conn.get(dirty)
        if now == seen:
            break
        seen = now
    return seen
