"""What Coconut holds for a mailbox's busy blocks, compared with what we recorded writing.

Pure rules, no I/O. A full reconciliation (workers.mailbox_sync) lists every external absence
Coconut holds for the staff member and trusts that listing over Redis: Coconut's external id
(the Exchange event id) says which event a block stands for, so a lost or stale Redis never
makes a second block. Comparing the listing with our records tells what someone changed in
Coconut under us:

- a block whose fields differ from what we wrote was moved or retitled in Coconut;
- a block we recorded that Coconut no longer lists was deleted in Coconut.

Both are put back as Outlook has it, the same as an Outlook-side edit of a Coconut projection.

A block is compared by a digest of what it says (who, when, all-day, zone, title, notes and
event), with times as UTC instants: Coconut answers in the staff member's zone what we sent in
UTC, and those are the same block.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import NamedTuple

from core.coconut.models import Absence, AbsenceWrite
from core.sync_records import Block


class Changed(NamedTuple):
    """One of our blocks someone changed in Coconut: `what` is "changed" or "deleted"."""

    event_id: str
    what: str
    title: str


class Comparison(NamedTuple):
    known: dict[str, Block]  # event id -> the block Coconut holds for it
    changed: list[Changed]


def digest(write: AbsenceWrite) -> str:
    """What a block says, apart from the changeKey it was made from (a new changeKey alone
    changes nothing in Coconut)."""
    fields = {
        "user_id": write.user_id,
        "start": write.start.astimezone(UTC).isoformat(),
        "end": write.end.astimezone(UTC).isoformat(),
        "all_day": write.all_day,
        "timezone": write.timezone,
        "title": write.title,
        "notes": write.notes or None,
        "external_id": write.external_id,
    }
    raw = json.dumps(fields, sort_keys=True).encode()
    return hashlib.sha256(raw).hexdigest()[:32]


def held_digest(absence: Absence) -> str:
    return digest(
        AbsenceWrite(
            user_id=absence.user_id, start=absence.start, end=absence.end,
            all_day=absence.all_day, timezone=absence.timezone, title=absence.title,
            notes=absence.notes, external_id=absence.external_id,
        )
    )  # fmt: skip


def compare(
    recorded: dict[str, Block], held: list[Absence], since: datetime | None = None
) -> Comparison:
    """The blocks Coconut holds, keyed by event id, with what we knew of each kept where it
    still holds; and which of ours were changed or deleted in Coconut. Blocks that ended
    before `since` (the window's start) are history: left alone, and no longer tracked."""
    by_event = {a.external_id: a for a in held if a.external_id}
    history = {e for e, a in by_event.items() if since is not None and a.end <= since}
    known: dict[str, Block] = {}
    changed: list[Changed] = []
    for event_id, absence in by_event.items():
        if event_id in history:
            continue
        ours = recorded.get(event_id)
        now = held_digest(absence)
        same = ours is not None and not ours.pending and ours.digest == now
        if ours is not None and not ours.pending and not same:
            changed.append(Changed(event_id, "changed", absence.title))
        known[event_id] = Block(
            absence.id, ours.series if ours else "", now, ours.version if same and ours else ""
        )
    for event_id, ours in recorded.items():
        if event_id not in by_event and not ours.pending:  # (history is in by_event)
            changed.append(Changed(event_id, "deleted", ""))
    return Comparison(known, sorted(changed, key=lambda c: c.event_id))
