"""`exsync worker`: an RQ worker that runs jobs in its own process.

RQ's default worker forks a child per job; ours must not, because the Graph client and its
event loop live for the whole process (workers.context). A killed worker's job is found by RQ's
registry clean-up and retried, and its item lock expires (core.jobs).
"""

from __future__ import annotations

from prometheus_client import start_http_server
from rq import SimpleWorker

from core.settings import Settings
from workers.context import WorkerContext, install


def run_worker(settings: Settings, *, host: str, port: int, burst: bool = False) -> int:
    ctx = WorkerContext(settings)
    install(ctx)
    if port:
        start_http_server(port, addr=host)
    worker = SimpleWorker([ctx.queue], connection=ctx.redis)
    worker.work(burst=burst, with_scheduler=True)
    return 0
