"""`exsync failed list|requeue`: jobs that exhausted their retries are listed with the reason they
failed and go back on the queue by id or all at once; a wrong id is a problem (exit 1).

(A failure met end to end, with the Coconut emulator refusing, is in test_appointment_sync.)
"""

from __future__ import annotations

import redis
from rq import Queue

from core import jobs
from tests.cli_support import invoke
from workers.runner import PromptWorker


def failing_job(conn: redis.Redis, job_id: str) -> Queue:
    """A job that really runs and fails: int("not a number") raises ValueError."""
    queue = jobs.queue("exsync", conn)
    queue.enqueue("builtins.int", "not a number", job_id=job_id)
    PromptWorker([queue], connection=conn, serializer=jobs.SERIALIZER).work(burst=True)
    return queue


def test_failed_list_says_so_when_nothing_failed(redis_url: str) -> None:
    done = invoke(redis_url, "failed", "list")
    assert done.exit_code == 0
    assert done.stdout == "no failed jobs\n"


def test_failed_list_shows_each_job_with_its_function_and_reason(
    redis_url: str, redis_conn: redis.Redis
) -> None:
    failing_job(redis_conn, "appointment-7")
    done = invoke(redis_url, "failed", "list")
    assert done.exit_code == 0
    job_id, func, ended, reason = done.stdout.strip().split("\t")
    assert (job_id, func) == ("appointment-7", "builtins.int")
    assert ended.startswith("20")
    assert reason.startswith("ValueError: invalid literal for int()")


def test_failed_requeue_by_id_puts_the_job_back_and_an_unknown_id_exits_1(
    redis_url: str, redis_conn: redis.Redis
) -> None:
    queue = failing_job(redis_conn, "appointment-7")
    failing_job(redis_conn, "appointment-8")
    done = invoke(redis_url, "failed", "requeue", "appointment-7", "appointment-99")
    assert done.exit_code == 1
    assert done.stdout == "requeued appointment-7\n"
    assert done.stderr == "not a failed job: appointment-99\n"
    assert queue.get_job_ids() == ["appointment-7"]
    assert queue.failed_job_registry.get_job_ids() == ["appointment-8"]


def test_failed_requeue_all_empties_the_registry(redis_url: str, redis_conn: redis.Redis) -> None:
    queue = failing_job(redis_conn, "appointment-7")
    failing_job(redis_conn, "mailbox-u-1")
    done = invoke(redis_url, "failed", "requeue", "--all")
    assert done.exit_code == 0, done.output
    assert sorted(queue.get_job_ids()) == ["appointment-7", "mailbox-u-1"]
    assert queue.failed_job_registry.count == 0
