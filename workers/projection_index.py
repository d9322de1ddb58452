"""The index of what we projected where, in Redis: by item and by event, written together."""

from __future__ import annotations

import redis

from core import store
from core.sync_records import Projection, dump, load


class ProjectionIndex:
    """Projections by item (`exsync:projection:{kind}:{id}`, mailbox → json) and by event
    (`exsync:projected:{mailbox}`, event id → json), written together in one transaction."""

    def __init__(self, conn: redis.Redis) -> None:
        self.conn = conn

    def for_item(self, kind: str, item_id: str) -> dict[str, Projection]:
        raw = self.conn.hgetall(store.projection_key(kind, item_id))
        return {k.decode(): load(Projection, v) for k, v in raw.items()}  # type: ignore[union-attr]

    def by_events(self, mailbox: str, event_ids: list[str]) -> dict[str, Projection]:
        """Our projections among these events of the mailbox, in one round trip."""
        if not event_ids:
            return {}
        raw = self.conn.hmget(store.projected_key(mailbox), event_ids)
        return {e: load(Projection, r) for e, r in zip(event_ids, raw, strict=True) if r}

    def in_mailbox(self, mailbox: str) -> list[Projection]:
        raw = self.conn.hgetall(store.projected_key(mailbox))
        return [load(Projection, v) for v in raw.values()]  # type: ignore[union-attr]

    def save(self, projection: Projection, replaces: Projection | None = None) -> None:
        """Record a projection (a pending one only by item: it has no event id yet)."""
        body = dump(projection)
        pipe = self.conn.pipeline()
        if replaces is not None and replaces.event_id not in ("", projection.event_id):
            pipe.hdel(store.projected_key(replaces.mailbox), replaces.event_id)
        pipe.hset(
            store.projection_key(projection.kind, projection.item_id), projection.mailbox, body
        )
        if not projection.pending:
            pipe.hset(store.projected_key(projection.mailbox), projection.event_id, body)
        pipe.execute()

    def remove(self, projection: Projection) -> None:
        pipe = self.conn.pipeline()
        pipe.hdel(store.projection_key(projection.kind, projection.item_id), projection.mailbox)
        if not projection.pending:
            pipe.hdel(store.projected_key(projection.mailbox), projection.event_id)
        pipe.execute()
