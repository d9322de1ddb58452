"""The projection planner (workers.projection_plan): what one mailbox needs for one item, the
same rules for an item's own job and a staff member's bulk round."""

from __future__ import annotations

from dataclasses import replace

import pytest

from core.sync_records import Projection
from workers.projection import EventDraft
from workers.projection_plan import Action, Item, Read, Write, needed_read, plan

MAILBOX = "u-1"
DRAFT = EventDraft("Loan review with Ann", "<p>body</p>", "Main St", "2026-12-07T10:00:00",
                   "2026-12-07T10:30:00", "America/Toronto")  # fmt: skip
EDITED = replace(DRAFT, subject="Loan review with Ann Lee")
ITEM = Item("appointment", "36", DRAFT)
GONE = Item("appointment", "36", None)


class Found:
    def __init__(self, event_id: str, change_key: str) -> None:
        self.event_id, self.change_key = event_id, change_key


def mapped(event_id: str = "E1", change_key: str = "ck1", digest: str = DRAFT.digest,
           generation: int = 0) -> Projection:  # fmt: skip
    return Projection("appointment", "36", MAILBOX, event_id, change_key, generation, digest)


PENDING = Projection("appointment", "36", MAILBOX, "", "", generation=2)


def actions(writes: list[Write]) -> list[tuple[Action, str]]:
    return [(w.action, w.event_id) for w in writes]


def test_a_new_item_with_nothing_in_the_mailbox_is_created_at_generation_zero() -> None:
    (write,) = plan(MAILBOX, ITEM, None, [])
    assert (write.action, write.base, write.generation) == (Action.CREATE, None, 0)


def test_a_pending_create_that_left_nothing_is_made_again_with_its_own_generation() -> None:
    (write,) = plan(MAILBOX, ITEM, PENDING, [])
    assert (write.action, write.base, write.generation) == (Action.CREATE, PENDING, 2)


def test_an_event_the_mailbox_shows_is_adopted_never_created_twice() -> None:
    writes = plan(MAILBOX, ITEM, PENDING, [Found("E7", "ck7")])
    assert actions(writes) == [(Action.ADOPT, "E7"), (Action.UPDATE, "E7")]
    adopted = writes[0].record
    assert adopted == Projection("appointment", "36", MAILBOX, "E7", "ck7", 2)
    assert writes[0].base == PENDING and writes[1].base == adopted


def test_copies_of_one_mark_are_dropped_down_to_the_mapped_one() -> None:
    writes = plan(MAILBOX, ITEM, mapped("E2", "ck2"), [Found("E1", "x"), Found("E2", "ck2")])
    assert actions(writes) == [(Action.DROP, "E1")]


def test_without_the_mapped_event_the_first_shown_is_kept_and_the_rest_dropped() -> None:
    found = [Found("E5", "a"), Found("E6", "b"), Found("E7", "c")]
    writes = plan(MAILBOX, ITEM, mapped("E9", generation=4), found)
    assert actions(writes) == [(Action.ADOPT, "E5"), (Action.DROP, "E6"), (Action.DROP, "E7"),
                               (Action.UPDATE, "E5")]  # fmt: skip
    assert writes[0].record is not None and writes[0].record.generation == 4


def test_an_event_as_we_wrote_it_with_its_changekey_unmoved_needs_nothing() -> None:
    assert plan(MAILBOX, ITEM, mapped(), [Found("E1", "ck1")]) == []


def test_an_edit_in_outlook_moves_the_changekey_and_is_put_back() -> None:
    (write,) = plan(MAILBOX, ITEM, mapped(), [Found("E1", "ck-edited")])
    assert (write.action, write.event_id, write.base) == (Action.UPDATE, "E1", mapped())


def test_an_edit_is_kept_when_the_policy_keeps_staff_edits() -> None:
    assert plan(MAILBOX, ITEM, mapped(), [Found("E1", "ck-edited")], keep_edits=True) == []
    assert plan(MAILBOX, ITEM, mapped(), [], keep_edits=True) == []  # deleted in Outlook


def test_a_change_in_coconut_is_written_whatever_the_policy() -> None:
    item = Item("appointment", "36", EDITED)
    for keep in (False, True):
        (write,) = plan(MAILBOX, item, mapped(), [Found("E1", "ck1")], keep_edits=keep)
        assert (write.action, write.event_id) == (Action.UPDATE, "E1")


def test_a_mapped_event_the_mailbox_does_not_show_is_patched_so_its_404_decides() -> None:
    (write,) = plan(MAILBOX, ITEM, mapped(generation=3), [])
    assert (write.action, write.event_id, write.generation) == (Action.UPDATE, "E1", 3)


def test_unread_the_mapping_is_trusted() -> None:
    (write,) = plan(MAILBOX, Item("appointment", "36", EDITED), mapped(), None)
    assert (write.action, write.event_id) == (Action.UPDATE, "E1")


def test_an_item_that_no_longer_belongs_takes_every_event_of_its_mark_with_it() -> None:
    writes = plan(MAILBOX, GONE, mapped("E1"), [Found("E2", "x")])
    assert actions(writes) == [(Action.REMOVE, "E1"), (Action.REMOVE, "E2")]
    assert all(w.base == mapped("E1") for w in writes)


def test_a_pending_create_of_an_item_that_no_longer_belongs() -> None:
    assert actions(plan(MAILBOX, GONE, PENDING, [Found("E4", "x")])) == [(Action.REMOVE, "E4")]
    (forget,) = plan(MAILBOX, GONE, PENDING, [])
    assert (forget.action, forget.base) == (Action.FORGET, PENDING)
    assert plan(MAILBOX, GONE, None, []) == []


@pytest.mark.parametrize(
    ("known", "item", "keep", "read"),
    [
        (None, ITEM, False, Read.MARKED),
        (PENDING, ITEM, False, Read.MARKED),
        (PENDING, GONE, False, Read.MARKED),
        (mapped(), GONE, False, Read.NOTHING),
        (mapped(), ITEM, False, Read.CHANGE_KEY),  # only an edit in Outlook calls for a write
        (mapped(), ITEM, True, Read.NOTHING),
        (mapped(digest="older"), ITEM, False, Read.NOTHING),  # a write is due anyway
    ],
)
def test_the_one_read_a_caller_without_a_listing_makes(
    known: Projection | None, item: Item, keep: bool, read: Read
) -> None:
    assert needed_read(known, item, keep) is read


# Whole writes: each names its item, the mapping it replaces and the generation whose
# transactionId a create (now, or after the patch's 404) uses.


def test_whole_writes_for_a_create_new_or_made_again() -> None:
    assert plan(MAILBOX, ITEM, None, []) == [Write(ITEM, Action.CREATE)]
    assert plan(MAILBOX, ITEM, PENDING, []) == [
        Write(ITEM, Action.CREATE, base=PENDING, generation=2)
    ]


def test_whole_write_for_a_mapped_event_shown_or_not_or_unread() -> None:
    known = mapped(generation=3)
    # Deleted in Outlook: the patch's 404 decides, and earns a create with generation 4.
    assert plan(MAILBOX, ITEM, known, []) == [Write(ITEM, Action.UPDATE, "E1", known, 3)]
    edited = Item("appointment", "36", EDITED)
    assert plan(MAILBOX, edited, known, None) == [Write(edited, Action.UPDATE, "E1", known, 3)]
    assert plan(MAILBOX, edited, known, [Found("E1", "ck1")]) == [
        Write(edited, Action.UPDATE, "E1", known, 3)
    ]


def test_a_lost_mapping_adopts_the_marked_event_at_generation_zero_and_writes_it() -> None:
    # Redis forgot the mapping; the mark shows E5. What E5 holds is unknown (no digest), so
    # the draft is written over it, in place: never a second create.
    writes = plan(MAILBOX, ITEM, None, [Found("E5", "ck5")])
    adopted = Projection("appointment", "36", MAILBOX, "E5", "ck5", 0)
    assert writes == [
        Write(ITEM, Action.ADOPT, "E5", None, 0, adopted),
        Write(ITEM, Action.UPDATE, "E5", adopted, 0),
    ]


def test_adopting_in_place_of_a_mapping_keeps_its_generation() -> None:
    # The mapped E9 is gone; E5 and E6 carry the mark (a crash between generations' creates).
    known = mapped("E9", "ck9", generation=4)
    writes = plan(MAILBOX, ITEM, known, [Found("E5", "a"), Found("E6", "b")])
    adopted = Projection("appointment", "36", MAILBOX, "E5", "a", 4)
    assert writes == [
        Write(ITEM, Action.ADOPT, "E5", known, 4, adopted),
        Write(ITEM, Action.DROP, "E6"),
        Write(ITEM, Action.UPDATE, "E5", adopted, 4),
    ]


def test_a_copy_of_the_mapped_event_is_dropped_whole() -> None:
    known = mapped("E2", "ck2", generation=1)
    assert plan(MAILBOX, ITEM, known, [Found("E1", "x"), Found("E2", "ck2")]) == [
        Write(ITEM, Action.DROP, "E1")
    ]


def test_whole_writes_for_an_item_that_no_longer_belongs() -> None:
    known = mapped("E1", generation=2)
    # Each event goes once, the mapped one included when the mailbox also shows it.
    assert plan(MAILBOX, GONE, known, [Found("E2", "x"), Found("E1", "ck1")]) == [
        Write(GONE, Action.REMOVE, "E1", known),
        Write(GONE, Action.REMOVE, "E2", known),
    ]
    assert plan(MAILBOX, GONE, known, None) == [Write(GONE, Action.REMOVE, "E1", known)]
    assert plan(MAILBOX, GONE, PENDING, []) == [Write(GONE, Action.FORGET, base=PENDING)]
    assert plan(MAILBOX, GONE, PENDING, [Found("E4", "x")]) == [
        Write(GONE, Action.REMOVE, "E4", PENDING)
    ]


@pytest.mark.parametrize("known", [None, PENDING], ids=["unmapped", "pending"])
def test_without_a_mark_read_nothing_unmapped_or_pending_is_written_blindly(
    known: Projection | None,
) -> None:
    # needed_read asks for the mark here; a caller that skipped it is refused, not answered
    # with a patch of no event or a second create.
    with pytest.raises(AssertionError, match=r"^a pending create needs its mark read$"):
        plan(MAILBOX, ITEM, known, None)


def test_an_item_is_keyed_as_its_record_is() -> None:
    # A bulk round looks each item's record up by (kind, item id), as the records store it.
    absence = Item("absence", "36", None)
    assert ITEM.key == (PENDING.kind, PENDING.item_id) == ("appointment", "36")
    assert absence.key == ("absence", "36") != ITEM.key
