"""The busy-block planner (workers.block_plan): a delta round's instances into the blocks
Coconut should hold, and the Graph reads it asks for before it can say."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from core.coconut.models import AbsenceWrite
from core.sync_records import Block, Projection
from workers.block_plan import Instance, Mailbox, OwnEdit, Reads, RoundPlan, plan

AT = datetime(2026, 12, 7, 14, tzinfo=UTC)
UNTIL = datetime(2026, 12, 7, 15, tzinfo=UTC)
MEETING = Instance("E1", "ck1", subject="Branch audit", sensitivity="normal", start=AT, end=UNTIL)
BOX = Mailbox(7, "America/Toronto", "dep", known={}, ours={}, marked={}, full=False,
              show_titles=True)  # fmt: skip
OURS = Projection("appointment", "36", "u-1", "P1", "ck-ours", 0, "d")


def planned(instances: list[Instance], box: Mailbox = BOX, reads: Reads | None = None) -> RoundPlan:
    result = plan(instances, box, reads or Reads())
    assert isinstance(result, RoundPlan), f"still needs reads: {result}"
    return result


def test_a_staff_member_s_meeting_becomes_one_block_with_its_title() -> None:
    out = planned([MEETING])
    ((block, series),) = out.wanted.values()
    assert (block.user_id, block.start, block.end, block.title) == (7, AT, UNTIL, "Branch audit")
    assert (block.external_id, block.external_version, series) == ("E1", "ck1", "")
    assert out.removals == set() and out.unblocked == set()


def test_titles_stay_out_when_the_admin_says_so_and_for_private_events() -> None:
    hidden = planned([MEETING], replace(BOX, show_titles=False))
    private = planned([replace(MEETING, sensitivity="private")])
    assert hidden.wanted["E1"][0].title == private.wanted["E1"][0].title == "Busy"


def test_free_time_and_cancelled_events_need_no_block_and_lose_the_one_held() -> None:
    box = replace(BOX, known={"E1": Block(3, "", "d", "ck0")})
    for instance in (replace(MEETING, show_as="free"), replace(MEETING, is_cancelled=True)):
        out = planned([instance], box)
        assert (out.wanted, out.removals, out.unblocked) == ({}, {"E1"}, {"E1"})


def test_a_removed_series_takes_its_occurrences_blocks_with_it() -> None:
    box = replace(BOX, known={"O1": Block(1, "S", "d"), "O2": Block(2, "S", "d"),
                              "X": Block(3, "", "d")})  # fmt: skip
    out = planned([Instance("S", None, removed=True)], box)
    assert out.removals == {"O1", "O2"} and out.unblocked == {"S"}


def test_our_own_projection_is_never_busy_time_and_an_edit_of_it_is_reported() -> None:
    box = replace(BOX, ours={"P1": OURS})
    same = Instance(
        "P1", "ck-ours", subject="Loan review", sensitivity="normal", start=AT, end=UNTIL
    )
    assert planned([same], box) == RoundPlan()
    edited = planned([replace(same, change_key="ck-2")], box)
    assert edited.own_edits == [OwnEdit(OURS, deleted=False, subject="Loan review")]
    assert edited.wanted == {}
    deleted = planned([Instance("P1", None, removed=True)], box)
    assert deleted.own_edits == [OwnEdit(OURS, deleted=True)]


def test_an_event_carrying_our_mark_that_the_index_lost_is_requeued_not_blocked() -> None:
    out = planned([MEETING], replace(BOX, marked={"E1": ("appointment", "36")}, full=True))
    assert (out.wanted, out.requeue) == ({}, [("appointment", "36")])


def test_a_plain_occurrence_is_judged_by_its_master_read_once_per_series() -> None:
    one = Instance("O1", "c1", type="occurrence", series_master_id="S", start=AT, end=UNTIL)
    two = replace(one, event_id="O2")
    asked = plan([one, two], BOX, Reads())
    assert isinstance(asked, Reads) and asked.masters == {"S": None}
    reads = Reads(masters={"S": Instance("S", "cS", subject="Team standup", sensitivity="normal")})
    out = planned([one, two], BOX, reads)
    assert {e: (w.title, s) for e, (w, s) in out.wanted.items()} == {
        "O1": ("Team standup", "S"), "O2": ("Team standup", "S")}  # fmt: skip
    gone = planned(
        [one], replace(BOX, known={"O1": Block(1, "S", "d")}), Reads(masters={"S": None})
    )
    assert (gone.wanted, gone.removals) == ({}, {"O1"})


def test_a_new_event_with_a_transaction_id_has_its_mark_read_before_it_is_busy() -> None:
    new = replace(MEETING, transaction_id="tx-1")
    asked = plan([new], BOX, Reads())
    assert isinstance(asked, Reads) and asked.marks == {"E1": None}
    assert planned([new], BOX, Reads(marks={"E1": ""})).wanted.keys() == {"E1"}
    ours = planned([new], BOX, Reads(marks={"E1": "dep:absence:9"}))
    assert (ours.wanted, ours.requeue) == ({}, [("absence", "9")])
    theirs = planned([new], BOX, Reads(marks={"E1": "other:appointment:1"}))
    assert (theirs.wanted, theirs.requeue) == ({}, [])
    assert planned([new], BOX, Reads(marks={"E1": None})).wanted == {}  # gone already
    # A full round listed our marks already, and a known event was ours or not before.
    assert plan([new], replace(BOX, full=True), Reads()) != Reads()
    assert planned([new], replace(BOX, full=True)).wanted.keys() == {"E1"}


def test_a_block_the_round_did_not_list_goes_only_on_proof() -> None:
    known = {"A": Block(1, "", "d"), "P": Block(0, "", ""), "O": Block(2, "S", "d")}
    listed = Instance("O2", "c", type="exception", series_master_id="S", start=AT, end=UNTIL)
    incremental = plan([listed], replace(BOX, known=known), Reads())
    assert isinstance(incremental, Reads) and incremental.gone.keys() == {"P", "O"}
    full = plan([], replace(BOX, known=known, full=True), Reads())
    assert isinstance(full, Reads) and full.gone.keys() == {"A", "P", "O"}
    proofs = Reads(gone={"A": True, "P": False, "O": True})
    assert planned([], replace(BOX, known=known, full=True), proofs).removals == {"A", "O"}


def test_an_event_both_wanted_and_removed_is_kept() -> None:
    box = replace(BOX, known={"E1": Block(1, "", "d")}, full=True)
    out = planned([MEETING], box, Reads(gone={}))
    assert out.wanted.keys() == {"E1"} and out.removals == set()


def test_the_block_is_the_whole_absence_write_in_the_staff_member_s_zone() -> None:
    out = planned([MEETING])
    assert out.wanted == {
        "E1": (
            AbsenceWrite(user_id=7, start=AT, end=UNTIL, all_day=False,
                         timezone="America/Toronto", title="Branch audit", notes=None,
                         external_id="E1", external_version="ck1"),
            "",
        )
    }  # fmt: skip


def test_an_all_day_event_blocks_whole_days_in_the_staff_member_s_zone() -> None:
    # Graph gives an all-day event floating midnights; Toronto's 7 December starts at 05:00 UTC.
    day = replace(MEETING, is_all_day=True, start=datetime(2026, 12, 7, tzinfo=UTC),
                  end=datetime(2026, 12, 8, tzinfo=UTC))  # fmt: skip
    ((block, _),) = planned([day]).wanted.values()
    assert block.all_day is True
    assert (block.start.isoformat(), block.end.isoformat()) == (
        "2026-12-07T00:00:00-05:00", "2026-12-08T00:00:00-05:00")  # fmt: skip
    assert (block.start, block.end) == (
        datetime(2026, 12, 7, 5, tzinfo=UTC), datetime(2026, 12, 8, 5, tzinfo=UTC))  # fmt: skip
    # A plain occurrence takes all-day from its master, its times from itself.
    dec9, dec10 = datetime(2026, 12, 9, tzinfo=UTC), datetime(2026, 12, 10, tzinfo=UTC)
    one = Instance("O1", None, type="occurrence", series_master_id="S", etag='W/"e1"',
                   start=dec9, end=dec10)  # fmt: skip
    master = Instance("S", "cS", subject="Leave", sensitivity="normal", is_all_day=True)
    ((block, series),) = planned([one], BOX, Reads(masters={"S": master})).wanted.values()
    assert (block.all_day, block.start.isoformat(), block.end.isoformat(), series) == (
        True, "2026-12-09T00:00:00-05:00", "2026-12-10T00:00:00-05:00", "S")  # fmt: skip
    assert block.external_version == 'W/"e1"'  # no changeKey on a plain occurrence: its etag


def test_a_new_event_not_ours_becomes_the_same_whole_block_after_its_mark_read() -> None:
    new = replace(MEETING, transaction_id="tx-1")
    assert planned([new], BOX, Reads(marks={"E1": ""})).wanted == planned([MEETING]).wanted
    occurrence = Instance("X1", "cx", type="exception", series_master_id="S", start=AT,
                          end=UNTIL, subject="Moved standup", sensitivity="normal",
                          transaction_id="tx-2")  # fmt: skip
    ((block, series),) = planned([occurrence], BOX, Reads(marks={"X1": ""})).wanted.values()
    assert (block.title, block.external_id, series) == ("Moved standup", "X1", "S")


def test_removals_of_one_round_add_up() -> None:
    known = {"E1": Block(1, "", "d"), "O1": Block(2, "S", "d"), "O2": Block(3, "S", "d"),
             "X": Block(4, "", "d")}  # fmt: skip
    box = replace(BOX, known=known)
    gone_e1, gone_s = Instance("E1", None, removed=True), Instance("S", None, removed=True)
    for order in ([gone_e1, gone_s], [gone_s, gone_e1]):
        out = planned(order, box)
        assert (out.removals, out.unblocked) == ({"E1", "O1", "O2"}, {"E1", "S"})
    # An event turned free, after a removal, adds its own block and no other.
    free = replace(MEETING, show_as="free")
    out = planned([gone_e1, free], replace(BOX, known={**known, "E1": Block(1, "", "d")}))
    assert out.removals == {"E1"}
    out = planned([Instance("X", None, removed=True), free],
                  replace(box, known={**known, "E1": Block(5, "", "d")}))  # fmt: skip
    assert (out.removals, out.wanted) == ({"X", "E1"}, {})


@pytest.mark.parametrize(
    "instance",
    [replace(MEETING, start=None), replace(MEETING, end=None),
     replace(MEETING, start=None, end=None), replace(MEETING, event_id="")],
    ids=["no-start", "no-end", "no-times", "no-id"],
)  # fmt: skip
def test_an_event_without_times_or_id_can_say_nothing_and_its_block_stays(
    instance: Instance,
) -> None:
    box = replace(BOX, known={"E1": Block(1, "", "d")})
    assert planned([instance], box) == RoundPlan()
    assert planned([replace(instance, transaction_id="tx-1")], box) == RoundPlan()


def test_a_mark_is_read_only_for_an_event_that_would_be_busy_time() -> None:
    one = Instance("O1", "c1", type="occurrence", series_master_id="S", start=AT, end=UNTIL,
                   transaction_id="tx-1")  # fmt: skip
    # Its master first: until it is read the occurrence may be free time.
    assert plan([one], BOX, Reads()) == Reads(masters={"S": None})
    free = Reads(masters={"S": Instance("S", "cS", show_as="free")})
    assert planned([one], BOX, free) == RoundPlan(unblocked={"O1"})  # listed, needing none
    busy = Reads(masters={"S": Instance("S", "cS", subject="Standup", sensitivity="normal")})
    assert plan([one], BOX, busy) == Reads(marks={"O1": None})
    assert plan([replace(MEETING, show_as="free", transaction_id="tx-2")], BOX, Reads()) == (
        RoundPlan(unblocked={"E1"})
    )


def test_a_proof_asked_for_is_not_yet_a_proof() -> None:
    known = {"A": Block(1, "", "d"), "P": Block(0, "", "")}
    box = replace(BOX, known=known, full=True)
    asked = plan([], box, Reads())
    # `gone` answers "was its read a 404": a question not yet answered says no.
    assert asked == Reads(gone={"A": False, "P": False})
    assert isinstance(asked, Reads)
    assert planned([], box, asked).removals == set()


def test_only_a_staff_member_s_listed_occurrence_calls_for_its_series_proofs() -> None:
    # _instance's contract: a staff member's live occurrence or exception says the series moved;
    # our own events (mapped or marked) and removals are no staff member's series instance.
    known = {"O": Block(2, "S", "d")}
    box = replace(BOX, known=known, ours={"P1": OURS}, marked={"M1": ("absence", "9")})
    of_s = {"type": "exception", "series_master_id": "S", "start": AT, "end": UNTIL}
    for instance in (Instance("X", None, removed=True, type="exception", series_master_id="S"),
                     Instance("P1", "ck-ours", **of_s), Instance("P1", "ck-2", **of_s),
                     Instance("M1", "cm", **of_s)):  # fmt: skip
        assert isinstance(plan([instance], box, Reads()), RoundPlan), instance
    staff = plan([Instance("X2", "c", **of_s)], box, Reads())
    assert staff == Reads(gone={"O": False})


def test_a_series_master_listed_is_no_busy_time_of_its_own() -> None:
    # Its occurrences and exceptions are blocked one by one; the master's own start and end are
    # only the first occurrence's, which the round lists as an instance of its own.
    master = Instance(
        "S", "cS", type="seriesMaster", subject="Standup", sensitivity="normal", start=AT, end=UNTIL
    )
    assert planned([master]) == RoundPlan()
    assert planned([master], replace(BOX, full=True)) == RoundPlan()
