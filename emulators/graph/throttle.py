"""Exchange's per app + mailbox limits: requests in flight and requests per window.

Over the concurrency limit → 429 with the body Exchange sends in the wild, code
`ApplicationThrottled` and message "Application is over its MailboxConcurrency limit.", and
`Retry-After: 1`, except every OMIT_EVERY-th such answer, which has no `Retry-After` at all
(integrators see both: research/graph-reality.md item 5). Over the rate → 429
`ApplicationThrottled` with the integer `Retry-After` the window needs (the SDK ignores
fractional ones). Inner `$batch` requests count one by one, so a batch never raises the limit.
An armed `concurrency_throttle` fault answers the concurrency 429 at once, under the limit or
not, with `Retry-After` only when the fault names `retry_after`.
"""

from __future__ import annotations

import math
import threading
import time
from collections import defaultdict, deque

from flask import current_app, has_request_context, request

from emulators.graph.errors import GraphError
from emulators.graph.faults import Fault, Faults

CONCURRENCY = "Application is over its MailboxConcurrency limit."
OMIT_EVERY = 3  # every third concurrency 429 of an app + mailbox comes without Retry-After


def concurrency_error(retry_after: int | None) -> GraphError:
    """The 429 Exchange answers over MailboxConcurrency; no header when `retry_after` is None."""
    headers = {} if retry_after is None else {"Retry-After": str(retry_after)}
    return GraphError(429, "ApplicationThrottled", CONCURRENCY, headers)


class Throttle:
    def __init__(self, max_concurrency: int, rate_limit: int, rate_window: float) -> None:
        self.max_concurrency = max_concurrency
        self.rate_limit = rate_limit
        self.rate_window = rate_window
        self._lock = threading.Lock()
        self._in_flight: dict[tuple[str, str], int] = defaultdict(int)
        self._recent: dict[tuple[str, str], deque[float]] = defaultdict(deque)
        self._refused: dict[tuple[str, str], int] = defaultdict(int)

    def acquire(self, app: str, mailbox: str) -> None:
        """Takes a slot for one request, or raises the 429 Exchange would answer."""
        forced = _armed(mailbox)
        if forced is not None:
            raise concurrency_error(forced.params.get("retry_after"))
        key = (app, mailbox)
        now = time.monotonic()
        with self._lock:
            recent = self._recent[key]
            while recent and recent[0] <= now - self.rate_window:
                recent.popleft()
            if self._in_flight[key] >= self.max_concurrency:
                self._refused[key] += 1
                raise concurrency_error(None if self._refused[key] % OMIT_EVERY == 0 else 1)
            if len(recent) >= self.rate_limit:
                wait = max(1, math.ceil(recent[0] + self.rate_window - now))
                raise GraphError(
                    429, "ApplicationThrottled",
                    "Application is over its request limit for this mailbox.",
                    {"Retry-After": str(wait)},
                )  # fmt: skip
            recent.append(now)
            self._in_flight[key] += 1

    def release(self, app: str, mailbox: str) -> None:
        with self._lock:
            self._in_flight[(app, mailbox)] -= 1


def _armed(mailbox: str) -> Fault | None:
    """The armed `concurrency_throttle` fault that fires for this request, if any. Only within
    a request (every Graph call is one, and so is each part of a $batch)."""
    if not has_request_context():
        return None
    faults: Faults | None = current_app.extensions.get("graph_faults")
    return faults.take("concurrency_throttle", mailbox, request.method) if faults else None
