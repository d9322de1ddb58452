"""Exchange's per app + mailbox limits: requests in flight and requests per window.

Over the concurrency limit → 429 `MailboxConcurrency`; over the rate → 429
`ApplicationThrottled`; both with an integer `Retry-After` (the SDK ignores fractional ones).
Inner `$batch` requests count one by one, so a batch never raises the limit.
"""

from __future__ import annotations

import math
import threading
import time
from collections import defaultdict, deque

from emulators.graph.errors import GraphError


class Throttle:
    def __init__(self, max_concurrency: int, rate_limit: int, rate_window: float) -> None:
        self.max_concurrency = max_concurrency
        self.rate_limit = rate_limit
        self.rate_window = rate_window
        self._lock = threading.Lock()
        self._in_flight: dict[tuple[str, str], int] = defaultdict(int)
        self._recent: dict[tuple[str, str], deque[float]] = defaultdict(deque)

    def acquire(self, app: str, mailbox: str) -> None:
        """Takes a slot for one request, or raises the 429 Exchange would answer."""
        key = (app, mailbox)
        now = time.monotonic()
        with self._lock:
            recent = self._recent[key]
            while recent and recent[0] <= now - self.rate_window:
                recent.popleft()
            if self._in_flight[key] >= self.max_concurrency:
                raise GraphError(
                    429, "MailboxConcurrency",
                    "Application is over its MailboxConcurrency limit.", {"Retry-After": "1"},
                )  # fmt: skip
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
