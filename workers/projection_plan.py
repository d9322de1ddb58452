"""What one mailbox needs done for one Coconut item: the projection planner. Pure, no I/O.

Both ways an item reaches a mailbox plan here: its own job (workers.item_sync, one item in
every mailbox that should show it) and a staff member's bulk round (workers.staff_projection,
every item of theirs in one mailbox). They differ only in how they learn what the mailbox holds
and in how the writes go out (workers.projection_writes: one by one, or in `$batch`):

    known   what we recorded writing (core.sync_records.Projection), or None
    found   our events for the item the mailbox shows (id and changeKey; our mark says which),
            or None when the caller did not read (then `known` is trusted as it is)
    wanted  the event the item needs there (workers.projection.EventDraft), or None: none

The rules (DESIGN.md, "Ownership"):
- an event the mailbox shows is adopted (its mapping rebuilt), never created a second time;
  copies of one mark (a crash between two generations' creates) are dropped down to one;
- an event is written only when it differs from what we last wrote, or its changeKey moved (a
  staff member edited it), unless the edit policy keeps staff members' edits;
- a mapped event the mailbox does not show is patched, and only the patch's 404 makes it again,
  with the next generation's transactionId; a create that never answered is made again with its
  own transactionId, so Graph refuses it (400 ErrorDuplicateTransactionId) if it did happen, and
  the executor (workers.projection_writes) plans the event our mark finds, as here.

`needed_read` tells a caller that did not list the mailbox which one read makes `found` enough.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

from core.sync_records import Projection
from workers.projection import EventDraft


@dataclass(frozen=True)
class Item:
    kind: str  # "appointment" or "absence"
    item_id: str
    draft: EventDraft | None  # None: the mailbox should hold no event for it

    @property
    def key(self) -> tuple[str, str]:
        return (self.kind, self.item_id)


class Listed(Protocol):
    """One of our events for the item, as the mailbox shows it."""

    @property
    def event_id(self) -> str: ...

    @property
    def change_key(self) -> str: ...


class Action(Enum):
    ADOPT = "adopt"  # record `record` as the mapping in place of `base` (no request)
    FORGET = "forget"  # drop the mapping `base` (no request): its create left nothing behind
    CREATE = "create"
    UPDATE = "update"  # a 404 answer earns a create with the next generation
    REMOVE = "remove"  # the item's event goes, and with it the mapping `base`
    DROP = "drop"  # an extra copy of the item's event goes


@dataclass(frozen=True)
class Write:
    item: Item
    action: Action
    event_id: str = ""
    base: Projection | None = None  # the mapping this write replaces
    generation: int = 0
    record: Projection | None = None  # ADOPT: the mapping to record


class Read(Enum):
    NOTHING = "nothing"
    MARKED = "marked"  # the events carrying the item's mark
    CHANGE_KEY = "change_key"  # the mapped event's changeKey (None when it is gone)


def needed_read(known: Projection | None, item: Item, keep_edits: bool) -> Read:
    """The one read that tells `plan` enough, for a caller that does not list the mailbox."""
    if known is not None and known.pending:
        return Read.MARKED  # the create may have happened: our mark says where it went
    if item.draft is None:
        return Read.NOTHING
    if known is None:
        return Read.MARKED
    if known.digest == item.draft.digest and not keep_edits:
        return Read.CHANGE_KEY  # as we wrote it: only an edit in Outlook calls for a write
    return Read.NOTHING


def plan(
    mailbox: str,
    item: Item,
    known: Projection | None,
    found: Sequence[Listed] | None,
    keep_edits: bool = False,
) -> list[Write]:
    """The writes that make the mailbox hold what the item wants (see the module's rules)."""
    if item.draft is None:
        return _removal(item, known, found or [])
    if keep_edits and _as_written(known, item.draft):
        return []  # a staff member's edit (or deletion) stands until the item changes
    if found is None:
        assert known is not None and not known.pending, "a pending create needs its mark read"
        return [Write(item, Action.UPDATE, known.event_id, known, known.generation)]
    if not found:
        if known is not None and known.pending:
            return [Write(item, Action.CREATE, base=known, generation=known.generation)]
        if known is not None:  # mapped, not shown: deleted in Outlook, the patch's 404 says so
            return [Write(item, Action.UPDATE, known.event_id, known, known.generation)]
        return [Write(item, Action.CREATE)]
    keep = next((f for f in found if known and f.event_id == known.event_id), found[0])
    writes = [Write(item, Action.DROP, f.event_id) for f in found if f is not keep]
    base = known
    if known is None or known.event_id != keep.event_id:
        generation = known.generation if known else 0
        base = Projection(item.kind, item.item_id, mailbox, keep.event_id, keep.change_key,
                          generation)  # fmt: skip
        writes.insert(0, Write(item, Action.ADOPT, keep.event_id, known, generation, base))
    if _as_written(base, item.draft) and keep.change_key == base.change_key:
        return writes
    return [*writes, Write(item, Action.UPDATE, keep.event_id, base, base.generation)]


def _as_written(known: Projection | None, draft: EventDraft) -> bool:
    return known is not None and not known.pending and known.digest == draft.digest


def _removal(item: Item, known: Projection | None, found: Sequence[Listed]) -> list[Write]:
    gone = {f.event_id for f in found}
    if known is not None and not known.pending:
        gone.add(known.event_id)
    if not gone:
        return [Write(item, Action.FORGET, base=known)] if known is not None else []
    return [Write(item, Action.REMOVE, event_id, known) for event_id in sorted(gone)]
