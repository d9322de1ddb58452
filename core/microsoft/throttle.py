"""Graph calls per mailbox: at most N in flight across all workers, and one shared back-off.

Exchange throttles per app and mailbox (4 concurrent requests, 10,000 per 10 minutes). When
Graph answers 429 or 503 with `Retry-After`, every worker writing to that mailbox must wait, not
only the one that was told, so the wait is kept in Redis. The SDK's own retry handler is off
(core.microsoft.graph) because it waits alone and ignores fractional `Retry-After` values.

A 429 or 503 without `Retry-After` (Exchange sends some) backs the mailbox off exponentially,
the mailbox's, not one call's: each such answer, from any worker, is a strike counted in Redis,
and the n-th strike in a row blocks every worker for base * 2^(n-1) seconds (at most the
policy's maximum), jittered down by up to half, so workers told at once do not come back at
once. Strikes are forgotten after a quiet spell of twice the last wait.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar

import httpx
import redis
from msgraph.generated.models.o_data_errors.o_data_error import ODataError
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt

from core import store
from core.metrics import GRAPH_CALLS, THROTTLE_WAIT

log = logging.getLogger(__name__)
T = TypeVar("T")

TRANSIENT_STATUSES = {429, 500, 502, 503, 504}
SLOT_SECONDS = 60

# Takes ARGV[6] slots at once or none: a $batch needs several, and taking them one by one would
# let two batches each hold half of what both wait for.
_ACQUIRE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
local wanted = tonumber(ARGV[6])
if redis.call('ZCARD', KEYS[1]) + wanted <= tonumber(ARGV[3]) then
    for n = 1, wanted do
        redis.call('ZADD', KEYS[1], ARGV[2], ARGV[4] .. ':' .. n)
    end
    redis.call('EXPIRE', KEYS[1], ARGV[5])
    return 1
end
return 0
"""


class RetryPolicy:
    """How often and how long to retry transient Graph answers; tests shorten it."""

    attempts: int = 8
    base_seconds: float = 1.0
    max_seconds: float = 120.0


def status_of(exc: BaseException) -> int | None:
    return getattr(exc, "response_status_code", None) if isinstance(exc, ODataError) else None


def retry_after_seconds(exc: BaseException) -> float | None:
    """`Retry-After` as seconds (integer, fractional, or an HTTP date), if Graph sent one."""
    return retry_after_header(getattr(exc, "response_headers", None) or {})


def retry_after_header(headers: Any) -> float | None:
    """`Retry-After` from a headers mapping (an error's, or an inner `$batch` answer's)."""
    value = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
    if isinstance(value, list):
        value = value[0] if value else None
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


def _transient(exc: BaseException) -> bool:
    return status_of(exc) in TRANSIENT_STATUSES or isinstance(exc, _TransportError)


_TransportError = (OSError, asyncio.TimeoutError, httpx.TransportError)


class MailboxGate:
    """Runs Graph calls for one app against a mailbox within Exchange's limits."""

    def __init__(self, conn: redis.Redis, app: str, slots: int = 4) -> None:
        self.conn = conn
        self.app = app
        self.slots = slots
        self._acquire = conn.register_script(_ACQUIRE)

    def _key(self, what: str, mailbox: str) -> str:
        return store.graph_gate_key(what, self.app, mailbox)

    async def call(self, mailbox: str, request: Callable[[], Awaitable[T]], *, slots: int = 1) -> T:
        """Await `request()` in free slots (a `$batch` whose inner requests run in parallel takes
        as many as run at once); on 429/5xx wait as Graph asks, shared, and retry."""
        retrying = AsyncRetrying(
            retry=retry_if_exception(_transient),
            stop=stop_after_attempt(RetryPolicy.attempts),
            wait=lambda state: self._wait(mailbox, state),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                await self._blocked(mailbox)
                async with self._slot(mailbox, slots):
                    try:
                        answer = await request()
                    except ODataError as exc:
                        GRAPH_CALLS.labels(status=str(status_of(exc))).inc()
                        raise
                    GRAPH_CALLS.labels(status="ok").inc()
                    return answer
        raise AssertionError("unreachable: tenacity re-raises the last error")

    def blocked_for(self, mailbox: str) -> float:
        until = self.conn.get(self._key("blocked", mailbox))
        return max(0.0, float(until) - time.time()) if until else 0.0

    def _wait(self, mailbox: str, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        attempt = state.attempt_number - 1
        backoff = min(RetryPolicy.max_seconds, RetryPolicy.base_seconds * 2**attempt)
        status = status_of(exc) if exc else None
        if status not in (429, 503):
            return backoff
        asked = retry_after_seconds(exc) if exc else None
        delay = asked if asked is not None else self._strike(mailbox)
        # The wait happens in _blocked before the next attempt, for every worker on the mailbox.
        self._block(mailbox, delay)
        log.info("graph.throttled", extra={"mailbox": mailbox, "status": status, "wait": delay})
        return 0.0

    def _strike(self, mailbox: str) -> float:
        """One more answer without `Retry-After` for the mailbox: how long all must wait."""
        key = self._key("strikes", mailbox)
        strikes = int(self.conn.incr(key))  # type: ignore[arg-type]
        full = min(RetryPolicy.max_seconds, RetryPolicy.base_seconds * 2 ** (strikes - 1))
        self.conn.expire(key, max(1, int(full * 2) + 1))
        return full - random.uniform(0, full / 2)

    def hold(self, mailbox: str, seconds: float) -> None:
        """Make every worker's next call to the mailbox wait `seconds`: an inner `$batch` answer
        asked for it (the batch itself succeeded, so `call` never saw the 429)."""
        self._block(mailbox, seconds)

    def _block(self, mailbox: str, seconds: float) -> None:
        key = self._key("blocked", mailbox)
        until = time.time() + seconds
        current = self.conn.get(key)
        if current is None or float(current) < until:
            self.conn.set(key, until, px=max(1, int(seconds * 1000) + 1000))

    async def _blocked(self, mailbox: str) -> None:
        delay = self.blocked_for(mailbox)
        if delay > 0:
            THROTTLE_WAIT.inc(delay)
            await asyncio.sleep(delay)

    @asynccontextmanager
    async def _slot(self, mailbox: str, wanted: int = 1) -> AsyncIterator[None]:
        key = self._key("inflight", mailbox)
        token = uuid.uuid4().hex
        wanted = max(1, min(wanted, self.slots))
        while True:
            now = time.time()
            args = [now, now + SLOT_SECONDS, self.slots, token, SLOT_SECONDS * 2, wanted]
            if self._acquire(keys=[key], args=args):
                break
            await asyncio.sleep(0.02)
        try:
            yield
        finally:
            self.conn.zrem(key, *(f"{token}:{n}" for n in range(1, wanted + 1)))
