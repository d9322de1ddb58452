"""The records workers keep in Redis for what they wrote, and the one way to read them back.

    exsync:projection:{kind}:{item_id} / exsync:projected:{mailbox}   a Projection (json):
        an event we wrote into a staff member's calendar for a Coconut item
    exsync:block:{user_id}   a Block (json): a busy block we wrote to Coconut for an Outlook event

Both remember the Graph changeKey of the event state they stand for: workers compare it with
what Graph says now, and the receivers (webhooks.echoes) with what a notification announces, so
an echo of our own write costs no mailbox round. Workers and receivers read the records through
`load` and `echo_key` here, never by field name, so renaming a field cannot silently switch echo
suppression off.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import TypeVar

R = TypeVar("R", "Projection", "Block")


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


@dataclass(frozen=True)
class Block:
    """What we wrote to Coconut for one Exchange instance."""

    absence_id: int  # 0 while its create is pending
    series: str  # the series master's id for an occurrence or exception, else ""
    digest: str  # of the AbsenceWrite we last sent
    version: str = ""  # the changeKey of the instance it was made from (echo_key)

    @property
    def pending(self) -> bool:
        return not self.absence_id


def dump(record: Projection | Block) -> str:
    return json.dumps(asdict(record))


def load(kind: type[R], raw: bytes | str) -> R:
    return kind(**json.loads(raw))


def echo_key(kind: type[Projection] | type[Block], raw: bytes | None) -> str | None:
    """The changeKey a stored record stands for, None when there is none or it is unreadable
    (a notification is then news: the worst a bad record costs is one mailbox round)."""
    if raw is None:
        return None
    try:
        record = load(kind, raw)
    except (ValueError, TypeError):
        return None
    return record.change_key if isinstance(record, Projection) else record.version
