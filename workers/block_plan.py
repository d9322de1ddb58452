"""What a mailbox's delta round asks of Coconut: the busy-block planner. Pure, no I/O.

In: the instances a delta round read (Outlook events as plain data), the blocks we recorded
writing, and what else is known about the mailbox. Out: the blocks Coconut should hold for the
round's events, the ones that must go, and the projections of ours a staff member touched.

Some answers need one more Graph read, and the planner says which instead of making it (the
job gathers them, workers.outlook_reads, and plans again):
- a plain occurrence is judged by its series master (read once per series);
- a new event with a transactionId may be one of ours whose mapping Redis lost: its mark is
  read once before it becomes busy time (our events always carry both);
- Graph sends no @removed for an occurrence deleted from a live series, nor for an event a
  round never saw again: a block we hold for an event the round did not list is removed only on
  proof, its own 404 (every such block in a full round, else a pending one or one whose series
  the round listed).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from core.coconut.models import AbsenceWrite
from core.sync_records import Block, Projection
from workers import busy_time
from workers.marks import parse_mark

GONE = None  # a read found no such event (404)


@dataclass(frozen=True)
class Instance:
    """One Outlook event (or occurrence) as a delta page lists it, free of the SDK."""

    event_id: str
    change_key: str | None
    removed: bool = False  # listed as @removed
    type: str = "singleInstance"  # singleInstance, occurrence, exception, seriesMaster
    series_master_id: str = ""
    subject: str | None = None
    sensitivity: str | None = None
    show_as: str | None = None
    is_cancelled: bool = False
    is_all_day: bool = False
    start: datetime | None = None  # UTC
    end: datetime | None = None
    etag: str = ""  # @odata.etag, when there is no changeKey
    transaction_id: str | None = None

    @property
    def series(self) -> str:
        """The series an occurrence or exception belongs to, else ""."""
        return self.series_master_id if self.type in ("occurrence", "exception") else ""


@dataclass(frozen=True)
class Mailbox:
    """What the round knows of the mailbox besides its delta page."""

    staff_id: int
    zone: str  # IANA
    deployment_id: str
    known: dict[str, Block]  # event id -> the block we recorded writing
    ours: dict[str, Projection]  # event id -> our projection, for the round's events
    marked: dict[str, tuple[str, str]]  # full rounds: our marked events (kind, item id)
    full: bool
    show_titles: bool


@dataclass
class Reads:
    """Graph reads the planner needs answered; each answer is None when the event is gone."""

    masters: dict[str, Instance | None] = field(default_factory=dict)  # by series id
    marks: dict[str, str | None] = field(default_factory=dict)  # event id -> mark ("" none)
    gone: dict[str, bool] = field(default_factory=dict)  # event id -> its read was a 404

    def __bool__(self) -> bool:
        return bool(self.masters or self.marks or self.gone)


@dataclass(frozen=True)
class OwnEdit:
    """A staff member edited or deleted one of our projections in Outlook."""

    projection: Projection
    deleted: bool
    subject: str | None = None


@dataclass
class RoundPlan:
    wanted: dict[str, tuple[AbsenceWrite, str]] = field(default_factory=dict)  # (block, series)
    removals: set[str] = field(default_factory=set)
    unblocked: set[str] = field(default_factory=set)  # listed, needing no block
    own_edits: list[OwnEdit] = field(default_factory=list)
    requeue: list[tuple[str, str]] = field(default_factory=list)  # our items to project again


def plan(instances: list[Instance], mailbox: Mailbox, answered: Reads) -> RoundPlan | Reads:
    """The round's plan, or the reads still needed for it (none of them in `answered`)."""
    out, needed = RoundPlan(), Reads()
    seen: set[str] = set()
    series_listed: set[str] = set()
    for instance in instances:
        seen.add(instance.event_id)
        if _instance(instance, mailbox, answered, out, needed):
            series_listed.add(instance.series)
    known = mailbox.known
    unlisted = [
        e for e, b in known.items()
        if e not in seen and (mailbox.full or b.pending or (b.series and b.series in series_listed))
    ]  # fmt: skip
    for event_id in unlisted:
        if event_id not in answered.gone:
            needed.gone[event_id] = False
        elif answered.gone[event_id]:
            out.removals.add(event_id)
    if needed:
        return needed
    out.removals -= out.wanted.keys()
    return out


def _instance(
    instance: Instance, mailbox: Mailbox, answered: Reads, out: RoundPlan, needed: Reads
) -> bool:
    """Plan one instance; whether it is a staff member's occurrence or exception of a series
    (its series' other blocks the round did not list then need their proof)."""
    event_id, known = instance.event_id, mailbox.known
    ours = mailbox.ours.get(event_id)
    if instance.removed:
        if ours is not None:
            out.own_edits.append(OwnEdit(ours, deleted=True))
        out.removals |= {event_id} & known.keys()
        out.removals |= {e for e, b in known.items() if b.series == event_id}
        out.unblocked.add(event_id)
        return False
    if ours is not None:
        if instance.change_key is not None and instance.change_key != ours.change_key:
            out.own_edits.append(OwnEdit(ours, deleted=False, subject=instance.subject))
        return False
    if event_id in mailbox.marked:  # ours, though the index forgot it: its own job rebuilds it
        out.requeue.append(mailbox.marked[event_id])
        return False
    if instance.type == "seriesMaster":
        return False  # a calendar view lists instances, not masters
    judged = _judged(instance, mailbox, answered, needed)
    desired = _desired(instance, judged, mailbox) if judged is not False else False
    if desired is None:
        out.removals |= {event_id} & known.keys()
        out.unblocked.add(event_id)
    elif desired is False:
        pass  # no times to block, or its master still to be read
    elif event_id not in known and not mailbox.full and instance.transaction_id:
        _maybe_ours(instance, desired, mailbox, answered, out, needed)
    else:
        out.wanted[event_id] = (desired, instance.series)
    return bool(instance.series)


def _judged(
    instance: Instance, mailbox: Mailbox, answered: Reads, needed: Reads
) -> busy_time.Judged | bool | None:
    """An exception carries its own fields; a plain occurrence is judged by its master (None
    when the master is gone, False while it is still to be read)."""
    if instance.type != "occurrence":
        return judge(instance, mailbox.show_titles)
    if instance.series not in answered.masters:
        needed.masters[instance.series] = None
        return False
    master = answered.masters[instance.series]
    return judge(master, mailbox.show_titles) if master is not None else None


def _desired(
    instance: Instance, judged: busy_time.Judged | None, mailbox: Mailbox
) -> AbsenceWrite | bool | None:
    """The block the instance needs, None for none, False when it cannot say (no times)."""
    if judged is None:  # its master is gone: the occurrence goes with it
        return None
    if instance.start is None or instance.end is None or not instance.event_id:
        return False
    occurrence = busy_time.Occurrence(
        event_id=instance.event_id,
        version=instance.change_key or instance.etag,
        start=instance.start,
        end=instance.end,
    )
    return busy_time.block_for(occurrence, judged, mailbox.staff_id, mailbox.zone)


def _maybe_ours(
    instance: Instance, desired: AbsenceWrite, mailbox: Mailbox, answered: Reads,
    out: RoundPlan, needed: Reads,
) -> None:  # fmt: skip
    event_id = instance.event_id
    if event_id not in answered.marks:
        needed.marks[event_id] = None
        return
    mark = answered.marks[event_id]
    if mark is GONE:
        return  # gone already: nothing to make busy
    parsed = parse_mark(mark)
    if parsed is not None:  # ours, or another deployment's projection: never busy time here
        if parsed[0] == mailbox.deployment_id:
            out.requeue.append((parsed[1], parsed[2]))  # its own job rebuilds the mapping
        return
    out.wanted[event_id] = (desired, instance.series)


def judge(instance: Instance, show_titles: bool) -> busy_time.Judged:
    return busy_time.judge(
        instance.subject,
        instance.sensitivity,
        instance.show_as,
        is_cancelled=instance.is_cancelled,
        is_all_day=instance.is_all_day,
        show_titles=show_titles,
    )
