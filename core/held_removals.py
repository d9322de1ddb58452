"""Busy-block removals held for an admin's review (workers.mass_delete_guard decides when to hold).

    exsync:held:{user_id}    set of Exchange event ids whose blocks wait to be removed;
                             the mailbox hash's `held_removals` says how many

Reading and discarding need only Redis, so the admin API and CLI use this module; releasing
removes blocks in Coconut and is a job (workers.held_release.release_holds).
"""

from __future__ import annotations

import redis

from core import audit, store


def held(conn: redis.Redis) -> dict[str, int]:
    """Mailbox user id -> how many removals wait."""
    prefix = store.held_key("")
    return {
        key.decode()[len(prefix) :]: int(conn.scard(key))
        for key in conn.scan_iter(match=prefix + "*", count=500)
    }


def discard(conn: redis.Redis, user_id: str) -> int:
    """Forget the held removals: the blocks stay in Coconut."""
    count = int(conn.scard(store.held_key(user_id)))
    pipe = conn.pipeline()
    pipe.delete(store.held_key(user_id))
    pipe.hdel(store.mailbox_key(user_id), "held_removals")
    pipe.execute()
    audit.emit("busy_time.kept", mailbox=user_id, kept=count)
    return count
