"""What the receiver tests share: the jobs a request queued, every key in Redis, and a refusal's
shape (a 4xx with a reason). The `unchanged` fixture that uses them is in tests/conftest.py."""

from __future__ import annotations

from typing import Any

import redis

from core import jobs


def queued(conn: redis.Redis) -> dict[str, tuple[str, tuple[Any, ...]]]:
    """Every job waiting in the service's queue: id -> (function, args)."""
    queue = jobs.queue("exsync", conn)
    return {job.id: (job.func_name, tuple(job.args)) for job in queue.get_jobs()}


def everything(conn: redis.Redis) -> dict[bytes, bytes | None]:
    return {key: conn.dump(key) for key in conn.scan_iter(count=1000)}


def refused(answer: Any, status: int, reason: str) -> None:
    assert answer.status_code == status, answer.get_data(as_text=True)
    body = answer.get_json()
    assert body["reason"] and reason in body["reason"], body
