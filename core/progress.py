"""How far the initial sync has got, per staff member and overall, for the admin pages and CLI.

Read, not counted: the initial sync (workers.initial_sync) records which items it queued for
each staff member, and an item is done when its dirty flag is cleared, which only a completed
round does (core.jobs). A crash therefore never shows work as done that was not.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis

from core import store

RUN_KEY = store.initial_sync_key()


@dataclass(frozen=True)
class UserProgress:
    staff_id: str
    address: str
    total: int
    done: int


@dataclass(frozen=True)
class Progress:
    state: str  # not_started | running | queued | done
    users: list[UserProgress]

    @property
    def total(self) -> int:
        return sum(u.total for u in self.users)

    @property
    def done(self) -> int:
        return sum(u.done for u in self.users)


def progress(conn: redis.Redis) -> Progress:
    """Per staff member and overall: how many of the queued items have completed a round."""
    run = {k.decode(): v.decode() for k, v in conn.hgetall(RUN_KEY).items()}
    if not run:
        return Progress("not_started", [])
    users = []
    for staff_id in filter(None, run.get("staff", "").split(",")):
        members = [m.decode() for m in conn.smembers(store.initial_sync_items_key(staff_id))]
        pending = sum(conn.exists(store.dirty_key(*m.split(":", 1))) for m in members)
        address = (conn.hget(store.initial_sync_staff_key(staff_id), "address") or b"").decode()
        users.append(UserProgress(staff_id, address, len(members), len(members) - pending))
    state = run["state"]
    if state == "queued" and all(u.done == u.total for u in users):
        state = "done"
    return Progress(state, users)
