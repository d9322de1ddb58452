"""Delivering change and lifecycle notifications the way Graph does.

One sender thread takes due deliveries from a heap and posts each in a small pool, so one slow
endpoint does not hold up the others. A delivery that gets no 2xx within the timeout is retried
with exponential backoff, 10 s doubling up to an hour between tries, for up to four hours (as
Graph's current delivery documentation says; all times `--notify-retry-scale`, or exactly as a
`notification_retry` switch gives them: `first`, `longest`, `give_up` seconds).
Each endpoint's answer times are kept for a ten-minute window: above 10 % slow answers its new
notifications are delayed, above 15 % they are dropped, as the delivery contract says.
Faults (drop, duplicate, delay, reorder) act when a notification is queued. With a
`notification_batch` switch, notifications for one URL queued within `window` seconds go in one
POST (at most `size`, 100 unless told), as Graph may send several at once; change and lifecycle
notifications are never mixed. Every notification given up (dropped by a fault or a slow
endpoint, or out of retries) is handed to `on_drop` (emulators.graph.subscriptions answers with
`missed`). The counters count notifications, and `posts` the POSTs that carried them.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx

from emulators.graph.faults import Fault, Faults
from emulators.graph.store import Store

log = logging.getLogger(__name__)

TIMEOUT = 3.0  # the publisher's hard answer budget (research/graph.md §3)
SLOW_SECONDS = 2.9
WINDOW = 600.0
MIN_SAMPLES = 10
SLOW_SHARE, DROP_SHARE = 0.10, 0.15
FIRST_RETRY, MAX_RETRY, GIVE_UP = 10.0, 3600.0, 4 * 3600.0
SLOW_DELAY = 10.0
BATCH_SIZE = 100


@dataclass(order=True)
class Delivery:
    due: float
    seq: int
    url: str = field(compare=False)
    payload: dict[str, Any] = field(compare=False)
    first: float = field(compare=False, default=0.0)
    attempt: int = field(compare=False, default=0)
    mailbox: str | None = field(compare=False, default=None)
    changed_at: float = field(compare=False, default=0.0)  # wall clock, for Store.announced
    # Notifications batched into this one after it was queued: (mailbox, changed_at) each.
    joined: list[tuple[str | None, float]] = field(compare=False, default_factory=list)
    batch: tuple[str, bool] | None = field(compare=False, default=None)  # (url, announces)

    def count(self) -> int:
        return len(self.payload.get("value") or ()) or 1


class Notifier:
    def __init__(self, store: Store, faults: Faults, verify: Any = True) -> None:
        self.store = store
        self.faults = faults
        self.scale = store.settings.notify_retry_scale
        self._heap: list[Delivery] = []
        self._held: list[Delivery] = []
        self._held_since = 0.0
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="graph-notify")
        self._answers: dict[str, deque[tuple[float, bool]]] = defaultdict(deque)
        self._answers_lock = threading.Lock()
        self._client = httpx.Client(timeout=TIMEOUT, verify=verify)
        self._posting = 0  # posts handed to the pool and not finished, under _cond
        self._thread = threading.Thread(target=self._run, name="graph-notifier", daemon=True)
        self._open: dict[tuple[str, bool], Delivery] = {}  # batches still taking notifications
        self.tick: Callable[[], None] | None = None
        self.on_drop: Callable[[dict[str, Any], str | None], None] | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        self._thread.join(timeout=5)
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._client.close()

    # -- queueing --------------------------------------------------------------------------
    def send(
        self, url: str, payload: dict[str, Any], mailbox: str | None, *, announces: bool = True,
        faulted: bool = True,
    ) -> None:  # fmt: skip
        """Queues one notification POST, after the armed faults have had their say (unless not
        `faulted`). `announces`: it tells of a change (a lifecycle notification does not)."""
        if faulted and self.faults.take("notification_drop", mailbox) is not None:
            self._dropped(payload, mailbox)
            log.info("notification dropped by fault")
            return
        delay = 0.0
        fault = self.faults.take("notification_delay", mailbox) if faulted else None
        if fault is not None:
            delay = float(fault.params["seconds"])
        state = self.endpoint_state(url)
        if state == "drop":
            self._dropped(payload, mailbox)
            log.info("notification dropped: endpoint is too slow")
            return
        if state == "slow":
            delay += SLOW_DELAY * self.scale
        duplicate = faulted and self.faults.take("notification_duplicate", mailbox) is not None
        copies = 2 if duplicate else 1
        now, changed_at = time.monotonic(), time.time() if announces else 0.0
        reorder = faulted and bool(self.faults.standing("notification_reorder"))
        batching = [] if delay or reorder else self.faults.standing("notification_batch")
        for _ in range(copies):
            item = Delivery(now + delay, next(self._seq), url, payload, now, 0, mailbox, changed_at)
            with self._cond:
                if batching and self._join(item, batching[0], announces):
                    continue
                if reorder:
                    if not self._held:
                        self._held_since = now
                    self._held.append(item)
                else:
                    heapq.heappush(self._heap, item)
                self._cond.notify_all()

    def _join(self, item: Delivery, switch: Fault, announces: bool) -> bool:
        """Batch the notification (under _cond): into the open batch for its URL if it has
        room (True), else it opens one that leaves `window` seconds from now (False)."""
        key = (item.url, announces)
        open_ = self._open.get(key)
        if open_ is not None and open_.count() < int(switch.params.get("size", BATCH_SIZE)):
            open_.payload["value"].extend(item.payload["value"])
            open_.joined.append((item.mailbox, item.changed_at))
            return True
        item.payload = {**item.payload, "value": list(item.payload["value"])}  # its own list
        item.due += float(switch.params.get("window", 0.1))
        item.batch = key
        self._open[key] = item
        return False

    def _release_held(self, now: float) -> None:
        """Hands out a held batch in reverse once it is full or held long enough."""
        reorders = self.faults.standing("notification_reorder")
        if not self._held:
            return
        fault = reorders[0] if reorders else None
        full = fault is None or len(self._held) >= int(fault.params["batch"])
        waited = fault is None or now - self._held_since >= float(
            fault.params.get("hold_seconds", 5)
        )
        if not (full or waited):
            return
        batch = list(reversed(self._held))
        self._held.clear()
        # One task posts the batch in turn, so the endpoint really sees the reversed order.
        self._posting += len(batch)
        self._pool.submit(lambda: [self._post(item) for item in batch])
        if fault is not None:
            self.faults.remove(fault)

    def pending(self) -> int:
        """Notifications not yet answered 2xx or given up on: queued, held or being posted."""
        with self._cond:
            return len(self._heap) + len(self._held) + self._posting

    # -- sending -----------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            with self._cond:
                now = time.monotonic()
                self._release_held(now)
                due = []
                while self._heap and self._heap[0].due <= now:
                    popped = heapq.heappop(self._heap)
                    if popped.batch is not None and self._open.get(popped.batch) is popped:
                        del self._open[popped.batch]  # full or not, it goes as it is
                    due.append(popped)
                wait = min(self._heap[0].due - now, 0.2) if self._heap else 0.2
                if not due:
                    self._cond.wait(max(wait, 0.01))
                self._posting += len(due)
            for item in due:
                self._pool.submit(self._post, item)
            if self.tick is not None:
                self.tick()

    def _post(self, item: Delivery) -> None:
        try:
            self._attempt(item)
        finally:
            with self._cond:
                self._posting -= 1

    def _attempt(self, item: Delivery) -> None:
        item.attempt += 1
        self._count("sent", item.count())
        self._count("posts")
        started = time.monotonic()
        ok = False
        try:
            response = self._client.post(item.url, json=item.payload)
            ok = 200 <= response.status_code < 300
            outcome = str(response.status_code)
        except httpx.HTTPError as exc:
            outcome = type(exc).__name__
        elapsed = time.monotonic() - started
        self._record(item.url, elapsed > SLOW_SECONDS or elapsed >= TIMEOUT)
        if ok:
            self._count("delivered", item.count())
            for mailbox, changed_at in [(item.mailbox, item.changed_at), *item.joined]:
                if mailbox is not None and changed_at:
                    self.store.announced(mailbox, changed_at)
            return
        log.info("notification attempt %d failed: %s", item.attempt, outcome)
        first, longest, give_up = self.schedule()
        backoff = min(first * 2 ** (item.attempt - 1), longest)
        now = time.monotonic()
        if now + backoff - item.first > give_up:
            self._dropped(item.payload, item.mailbox)
            return
        item.due = now + backoff
        with self._cond:
            heapq.heappush(self._heap, item)
            self._cond.notify_all()

    def _record(self, url: str, slow: bool) -> None:
        now = time.monotonic()
        with self._answers_lock:
            answers = self._answers[url]
            answers.append((now, slow))
            while answers and answers[0][0] < now - WINDOW:
                answers.popleft()

    def endpoint_state(self, url: str) -> str:
        """ "ok", "slow" (delayed) or "drop" from the endpoint's slow answers in the window."""
        now = time.monotonic()
        with self._answers_lock:
            answers = [slow for at, slow in self._answers.get(url, ()) if at >= now - WINDOW]
        if len(answers) < MIN_SAMPLES:
            return "ok"
        share = sum(answers) / len(answers)
        if share > DROP_SHARE:
            return "drop"
        return "slow" if share > SLOW_SHARE else "ok"

    def schedule(self) -> tuple[float, float, float]:
        """(first retry, longest wait between tries, give up after), in seconds."""
        switch = self.faults.standing("notification_retry")
        params = switch[0].params if switch else {}
        default = (FIRST_RETRY * self.scale, MAX_RETRY * self.scale, GIVE_UP * self.scale)
        return (
            float(params.get("first", default[0])),
            float(params.get("longest", default[1])),
            float(params.get("give_up", default[2])),
        )

    def _dropped(self, payload: dict[str, Any], mailbox: str | None) -> None:
        self._count("dropped", len(payload.get("value") or ()) or 1)
        if self.on_drop is not None:
            self.on_drop(payload, mailbox)

    def _count(self, name: str, n: int = 1) -> None:
        with self.store.lock:
            counters = self.store.counters["notifications"]
            counters[name] = counters.get(name, 0) + n
