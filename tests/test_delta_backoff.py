"""The back-off of a mailbox whose delta misbehaved (workers.mailbox_sync): when delta is tried
again, and that a good delta round clears our warning and only ours. Fast: Redis alone."""

from __future__ import annotations

import time
from types import SimpleNamespace

import redis

from core import reconcile, store
from workers import mailbox_sync
from workers.mailbox_sync import DELTA_WARNING, _delta_paused, _delta_recovered, backoff


def test_the_back_off_doubles_from_the_setting_up_to_a_day() -> None:
    assert [backoff(900, n) for n in (1, 2, 3, 4)] == [900, 1800, 3600, 7200]
    assert backoff(900, 8) == backoff(900, 500) == mailbox_sync.DELTA_RETRY_MAX_SECONDS == 86_400
    assert backoff(0, 3) == 0, "0 tries delta on every round"


def test_delta_waits_out_its_back_off_unless_an_admin_asked_for_the_round() -> None:
    later, earlier = str(time.time() + 60), str(time.time() - 1)
    waiting = {"delta_fault": "the same nextLink came back twice", "delta_retry_at": later}
    assert _delta_paused(waiting) == "the same nextLink came back twice"
    assert _delta_paused({**waiting, "delta_retry_at": earlier}) == ""
    assert _delta_paused({**waiting, reconcile.REQUESTED: "1700000000"}) == ""
    assert _delta_paused({}) == ""


def test_a_good_delta_round_clears_the_back_off_and_only_our_warning(
    redis_conn: redis.Redis,
) -> None:
    ctx = SimpleNamespace(redis=redis_conn)
    key = store.mailbox_key("u-1")
    fields = {"delta_fault": "x", "delta_failures": 3, "delta_retry_at": 1, "staff_id": "1"}
    redis_conn.hset(key, mapping={**fields, "warning": f"{DELTA_WARNING} for a@b.example (x)"})
    _delta_recovered(ctx, "u-1")  # type: ignore[arg-type]
    assert redis_conn.hgetall(key) == {b"staff_id": b"1"}

    other = "Coconut appointment 7 was edited in Outlook; it was put back as Coconut has it"
    redis_conn.hset(key, mapping={**fields, "warning": other})
    _delta_recovered(ctx, "u-1")  # type: ignore[arg-type]
    assert redis_conn.hgetall(key) == {b"staff_id": b"1", b"warning": other.encode()}
