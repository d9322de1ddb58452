"""Our mark on every event we write to Exchange, and the transactionId of every create. Pure.

The mark is a single-value extended property holding this deployment's id, the kind of
Coconut item and its id. It survives a lost Redis (a mapping is rebuilt from it, never by
creating a second event), and it keeps two deployments on one mailbox from adopting or deleting
each other's events. Delta pages do not carry extended properties, so the index of what we
projected where (workers.projection_index) maps each mailbox's event ids back to their items.
"""

from __future__ import annotations

import uuid

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
    """Deterministic per (item, mailbox, generation): a retried create never makes a second
    event (Graph refuses the id it has seen: workers.projection_writes adopts the first), and a
    projection re-created after a deletion gets a new generation, hence a new id."""
    name = f"{deployment_id}:{kind}:{item_id}:{mailbox}:{generation}"
    return str(uuid.uuid5(_TRANSACTION_NAMESPACE, name))
