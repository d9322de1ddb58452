"""Our mark on every event we write to Exchange, and the index of what we projected where.

The mark is a single-value extended property holding this deployment's id, the kind of
Coconut item and its id. It survives a lost Redis (a mapping is rebuilt from it, never by
creating a second event), and it keeps two deployments on one mailbox from adopting or deleting
each other's events. Delta pages do not carry extended properties, so the index also maps each
mailbox's event ids back to the item they project.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import asdict, dataclass

import redis

from core import store

# A fixed property set GUID for this application; the name says whose it is.
MARK_PROPERTY_ID = "String {6f5b2f0e-8a4c-4d0b-9f3e-2c7a1d9e4b60} Name CoconutExchangeSyncMark"
_TRANSACTION_NAMESPACE = uuid.UUID("0b7d3c1e-5a2f-4e8b-9c6d-1f2e3a4b5c6d")


def mark_value(deployment_id: str, kind: str, item_id: str) -> str:
    return f"{deployment_id}:{kind}:{item_id}"


def parse_mark(value: str) -> tuple[str, str, str] | None:
    """(deployment_id, kind, item_id), or None for a value we did not write."""
    parts = value.split(":")
    return (parts[0], parts[1], parts[2]) if len(parts) == 3 and all(parts) else None


def transaction_id(
    deployment_id: str, kind: str, item_id: str, mailbox: str, generation: int
) -> str:
    """Deterministic per (item, mailbox, generation): a retried create returns the first event,
    and a projection re-created after a deletion gets a new generation, hence a new id."""
    name = f"{deployment_id}:{kind}:{item_id}:{mailbox}:{generation}"
    return str(uuid.uuid5(_TRANSACTION_NAMESPACE, name))


@dataclass(frozen=True)
class Projection:
    """One event we wrote: which item it projects, where, and the changeKey we last wrote."""

    kind: str  # "appointment" or "absence"
    item_id: str
    mailbox: str  # Graph user id
    event_id: str
    change_key: str
    generation: int = 0
    digest: str = ""  # of the draft we wrote (workers.projection.EventDraft.digest)

    @property
    def pending(self) -> bool:
        """A create was begun and its answer never recorded (the worker died in between): the
        event may or may not be in the mailbox, and only our mark can tell."""
        return not self.event_id


class ProjectionIndex:
    """Projections by item (`exsync:projection:{kind}:{id}`, mailbox → json) and by event
    (`exsync:projected:{mailbox}`, event id → json), written together in one transaction."""

    def __init__(self, conn: redis.Redis) -> None:
        self.conn = conn

    def for_item(self, kind: str, item_id: str) -> dict[str, Projection]:
        raw = self.conn.hgetall(store.projection_key(kind, item_id))
        return {k.decode(): Projection(**json.loads(v)) for k, v in raw.items()}  # type: ignore[union-attr]

    def by_event(self, mailbox: str, event_id: str) -> Projection | None:
        raw = self.conn.hget(store.projected_key(mailbox), event_id)
        return Projection(**json.loads(raw)) if raw else None  # type: ignore[arg-type]

    def in_mailbox(self, mailbox: str) -> list[Projection]:
        raw = self.conn.hgetall(store.projected_key(mailbox))
        return [Projection(**json.loads(v)) for v in raw.values()]  # type: ignore[union-attr]

    def save(self, projection: Projection, replaces: Projection | None = None) -> None:
        """Record a projection (a pending one only by item: it has no event id yet)."""
        body = json.dumps(asdict(projection))
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
