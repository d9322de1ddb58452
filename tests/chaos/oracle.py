"""What "converged" means, checked exactly against both emulators once the system is quiet.

Every item has one owner (DESIGN.md), so the right end state is computable from the owners
alone with the same pure rules the workers use (workers.projection, workers.busy_time; those
rules have their own unit and property tests):

- every live Coconut appointment has exactly one event in each covered staff member's mailbox,
  with the fields `appointment_event` gives, and so does every Coconut absence;
- every blocking Outlook instance in a covered mailbox's window has exactly one busy block,
  with the right times and the title rule; nothing else carries our mark or a busy block;
- no private or confidential subject is anywhere: not in Coconut, not in Redis (compressed
  job data included), not in the service's logs;
- every busy block that was removed had a positive signal first (the event deleted,
  cancelled, made free, an occurrence deleted), never a mere absence.

`scope` leaves out of the first two checks the items whose latest change never reached the
service (the "no accepted webhook lost" phase, before any safety net runs).
"""

from __future__ import annotations

import zlib
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import redis

from core.coconut.client import CoconutClient
from core.coconut.models import Absence, Appointment, Staff
from tests.chaos.world import FUTURE_DAYS, PAST_DAYS, POSITIVE_SIGNALS, TAMPERED, World
from tests.harness import COCONUT_CLIENT_ID, COCONUT_CLIENT_SECRET
from workers import busy_time, windows_zones
from workers.marks import MARK_PROPERTY_ID, parse_mark
from workers.projection import Templates, absence_event, appointment_event, is_live

DEPLOYMENT = "exsync"
APP_URL = "https://bank.coconutcalendar.com"
# The service's own processes; the emulators are the outside world and may log what they like.
OUR_LOGS = ("web", "worker", "scheduler")
CLOCK_SLACK = timedelta(seconds=2)


@dataclass
class Scope:
    """What may still be wrong: mailboxes and items whose latest change never reached the
    service (its notification or webhook was dropped, or went to an expired subscription)."""

    stale_mailboxes: set[str] = field(default_factory=set)  # Graph user ids
    stale_items: set[tuple[str, str]] = field(default_factory=set)  # (kind, Coconut id)

    def mailbox(self, user_id: str) -> bool:
        return user_id not in self.stale_mailboxes

    def item(self, kind: str, item_id: str, mailboxes: set[str]) -> bool:
        return (kind, item_id) not in self.stale_items and all(self.mailbox(m) for m in mailboxes)


@dataclass
class Findings:
    problems: list[str] = field(default_factory=list)
    checked: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def add(self, check: str, detail: str) -> None:
        self.problems.append(f"{check}: {detail}")

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass
class Snapshot:
    """Both sides as they are now, read once per check."""

    staff: dict[int, Staff]
    mailboxes: dict[int, str]  # covered staff id -> Graph user id
    appointments: list[Appointment]
    absences: list[Absence]
    marked: dict[str, list[tuple[str, dict[str, Any]]]]  # mark -> [(user id, event)]
    instances: dict[str, list[dict[str, Any]]]  # user id -> calendarView in the window
    coconut_state: dict[str, Any]
    graph_state: dict[str, Any]


def snapshot(world: World) -> Snapshot:
    system = world.system
    coconut = CoconutClient(
        f"{system.coconut_base}/api/v2/b2b", COCONUT_CLIENT_ID, COCONUT_CLIENT_SECRET
    )
    with coconut:
        staff = {s.id: s for s in coconut.users()}
        appointments = list(coconut.appointments())
        absences = list(coconut.absences())
    graph_state = system.graph_state()
    by_mail = {u["mail"].lower(): u["id"] for u in graph_state["users"]}
    mailboxes = {
        s.id: by_mail[s.email.lower()]
        for s in staff.values()
        if s.active and s.takes_appointments and s.email.lower() in by_mail
    }
    marked: dict[str, list[tuple[str, dict[str, Any]]]] = defaultdict(list)
    for user_id, events in graph_state["events"].items():
        for event in events:
            mark = _mark(event)
            if mark is not None:
                marked[mark].append((user_id, event))
    mails = {u["id"]: u["mail"] for u in graph_state["users"]}
    instances = {
        uid: world.calendar_view(mails[uid], *busy_time.sync_window(uid, PAST_DAYS, FUTURE_DAYS))
        for uid in mailboxes.values()
    }
    return Snapshot(
        staff,
        mailboxes,
        appointments,
        absences,
        marked,
        instances,
        system.coconut_state(),
        graph_state,
    )


def check(world: World, scope: Scope | None = None, *, privacy: bool = True) -> Findings:
    scope = scope or Scope()
    snap = snapshot(world)
    found = Findings()
    _projections(snap, scope, found)
    titles = world.system.env.get("EXSYNC_SHOW_EVENT_TITLES", "false").lower() == "true"
    _busy_blocks(snap, scope, found, show_titles=titles)
    if privacy:
        _privacy(world, snap, found)
        _removals(world, snap, found)
    return found


# ---------------------------------------------------------------- Coconut -> Outlook


def _projections(snap: Snapshot, scope: Scope, found: Findings) -> None:
    wanted: dict[str, dict[str, Any]] = {}  # mark -> {user id: draft}
    for appointment in snap.appointments:
        mark = f"{DEPLOYMENT}:appointment:{appointment.id}"
        if is_live(appointment):
            draft = appointment_event(appointment, APP_URL, Templates())
            wanted[mark] = {
                snap.mailboxes[s]: draft for s in appointment.staff_ids if s in snap.mailboxes
            }
        else:
            wanted[mark] = {}
    for absence in snap.absences:
        if absence.source != "coconut":
            continue
        draft = absence_event(absence)
        mailbox = snap.mailboxes.get(absence.user_id)
        wanted[f"{DEPLOYMENT}:absence:{absence.id}"] = (
            {mailbox: draft} if draft is not None and mailbox is not None else {}
        )
    for mark in set(wanted) | set(snap.marked):
        _, kind, item_id = mark.split(":")
        want = wanted.get(mark, {})
        have: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for user_id, event in snap.marked.get(mark, []):
            have[user_id].append(event)
        if not scope.item(kind, item_id, set(want) | set(have)):
            continue
        found.checked["projections"] += 1
        for user_id in set(want) | set(have):
            events = have.get(user_id, [])
            if user_id not in want:
                found.add("orphaned projection", f"{mark} in {user_id}: {len(events)} event(s)")
            elif len(events) != 1:
                found.add("projection count", f"{mark} in {user_id}: {len(events)} events, want 1")
            else:
                for problem in _event_differs(events[0], want[user_id]):
                    found.add("projection field", f"{mark} in {user_id}: {problem}")


def _event_differs(event: dict[str, Any], draft: Any) -> list[str]:
    problems = []
    if event["subject"] != draft.subject:
        problems.append(f"subject {event['subject']!r}, want {draft.subject!r}")
    if bool(event["isAllDay"]) != draft.is_all_day:
        problems.append(f"isAllDay {event['isAllDay']}, want {draft.is_all_day}")
    if event["showAs"] != draft.show_as:
        problems.append(f"showAs {event['showAs']}, want {draft.show_as}")
    if (event.get("location") or {}).get("displayName", "") != draft.location:
        problems.append(f"location {event.get('location')!r}, want {draft.location!r}")
    if event["sensitivity"] != "normal":
        problems.append(f"sensitivity {event['sensitivity']}")
    for side in ("start", "end"):
        got = event[side]["dateTime"]
        wall = getattr(draft, side)
        if draft.is_all_day:
            if got[:10] != wall[:10]:
                problems.append(f"{side} {got[:10]}, want {wall[:10]}")
            continue
        written = ZoneInfo(windows_zones.rules_zone(draft.time_zone))  # a Windows name
        want = datetime.fromisoformat(wall).replace(tzinfo=written)
        if _utc(got) != want.astimezone(UTC):
            problems.append(f"{side} {got} UTC, want {want.astimezone(UTC).isoformat()}")
    return problems


# ---------------------------------------------------------------- Outlook -> Coconut


def _busy_blocks(snap: Snapshot, scope: Scope, found: Findings, *, show_titles: bool) -> None:
    external: dict[int, dict[str, list[Absence]]] = defaultdict(lambda: defaultdict(list))
    for absence in snap.absences:
        if absence.source == "external" and absence.external_id:
            external[absence.user_id][absence.external_id].append(absence)
    for staff_id, user_id in snap.mailboxes.items():
        if not scope.mailbox(user_id):
            continue
        found.checked["mailboxes"] += 1
        zone = busy_time.iana_zone(snap.staff[staff_id].timezone)
        wanted = {}
        for inst in snap.instances[user_id]:
            if _mark(inst) is not None:
                continue  # ours (or another deployment's): never busy time
            judged = busy_time.judge(
                inst["subject"],
                inst["sensitivity"],
                inst["showAs"],
                is_cancelled=bool(inst["isCancelled"]),
                is_all_day=bool(inst["isAllDay"]),
                show_titles=show_titles,
            )
            occurrence = busy_time.Occurrence(
                inst["id"],
                inst["changeKey"],
                _utc(inst["start"]["dateTime"]),
                _utc(inst["end"]["dateTime"]),
            )
            block = busy_time.block_for(occurrence, judged, staff_id, zone)
            if block is not None:
                wanted[inst["id"]] = block
        have = external.get(staff_id, {})
        found.checked["busy blocks"] += len(wanted)
        for event_id in set(wanted) | set(have):
            blocks = have.get(event_id, [])
            if event_id not in wanted:
                found.add("orphaned busy block", f"staff {staff_id} event {event_id[-12:]}")
            elif len(blocks) != 1:
                found.add(
                    "busy block count",
                    f"staff {staff_id} event {event_id[-12:]}: {len(blocks)} blocks, want 1",
                )
            else:
                want, got = wanted[event_id], blocks[0]
                if (got.start, got.end, got.all_day, got.title) != (
                    want.start,
                    want.end,
                    want.all_day,
                    want.title,
                ):
                    found.add(
                        "busy block field",
                        f"staff {staff_id} event {event_id[-12:]}: "
                        f"{(got.start, got.end, got.all_day, got.title)} want "
                        f"{(want.start, want.end, want.all_day, want.title)}",
                    )
                if got.notes:
                    found.add("busy block notes", f"staff {staff_id}: the description was copied")


# ---------------------------------------------------------------- privacy and removals


def secrets_now(world: World, snap: Snapshot) -> set[str]:
    """Every subject that must never be shown: the ones the run made private or confidential,
    and whatever private or confidential instance the mailboxes hold now (the seed's too)."""
    current = {
        inst["subject"]
        for instances in snap.instances.values()
        for inst in instances
        if inst["sensitivity"] != "normal" and inst["subject"]
    }
    return world.secrets_seen | current


def _privacy(world: World, snap: Snapshot, found: Findings) -> None:
    secrets = secrets_now(world, snap)
    found.checked["secrets"] = len(secrets)
    rows = snap.coconut_state["absences"] + snap.coconut_state["removed_absences"]
    for row in rows:
        text = f"{row.get('title')} {row.get('notes')}"
        for secret in secrets:
            if secret in text:
                found.add("private subject in Coconut", f"absence {row['id']}")
    for where in _redis_leaks(world.system.redis_url, secrets):
        found.add("private subject in Redis", where)
    for name, proc in world.system.processes.items():
        if not any(name.startswith(ours) or name.startswith(f"killed-{ours}") for ours in OUR_LOGS):
            continue
        log = proc.log()
        for secret in secrets:
            if secret in log:
                found.add("private subject in a log", f"{name}.log")


def _redis_leaks(url: str, secrets: set[str]) -> list[str]:
    """Keys whose value (decompressed when it is zlib data, as RQ's job data is) holds one."""
    conn = redis.Redis.from_url(url)
    needles = [s.encode() for s in secrets]
    leaks = []
    for key in conn.scan_iter(count=1000):
        for blob in _values(conn, key):
            for candidate in (blob, _inflate(blob)):
                if candidate and any(n in candidate for n in needles):
                    leaks.append(key.decode(errors="replace"))
    conn.close()
    return sorted(set(leaks))


def _values(conn: redis.Redis, key: bytes) -> list[bytes]:
    kind = conn.type(key).decode()
    if kind == "string":
        return [conn.get(key) or b""]
    if kind == "hash":
        return [k + b"=" + v for k, v in conn.hgetall(key).items()]
    if kind == "list":
        return list(conn.lrange(key, 0, -1))
    if kind == "set":
        return list(conn.smembers(key))
    if kind == "zset":
        return list(conn.zrange(key, 0, -1))
    if kind == "stream":
        return [
            b" ".join(k + b"=" + v for k, v in fields.items()) for _, fields in conn.xrange(key)
        ]
    return []


def _inflate(blob: bytes) -> bytes | None:
    try:
        return zlib.decompress(blob)
    except zlib.error:
        return None


def _removals(world: World, snap: Snapshot, found: Findings) -> None:
    """A busy block may only go after its event gave a positive signal."""
    signals: dict[str, datetime] = {}
    for at, kind, event_id in world.history:
        if kind in POSITIVE_SIGNALS or kind == TAMPERED:
            when = datetime.fromtimestamp(at, UTC)
            signals.setdefault(event_id, when)
    for row in snap.coconut_state["removed_absences"]:
        if row["source"] != "external":
            continue
        removed_at = _epoch(row["removed_at"])
        if any(began <= removed_at <= ended + 5 for began, ended in world.disconnects):
            continue  # the admin's Disconnect removed what the sync made
        found.checked["removals"] += 1
        event_id = row["external_id"]
        removed = datetime.fromisoformat(row["removed_at"].replace("Z", "+00:00"))
        master = world.series_of.get(event_id, event_id)
        first = min((signals[e] for e in (event_id, master) if e in signals), default=None)
        if first is None or first > removed + CLOCK_SLACK:
            found.add(
                "busy block removed without a signal",
                f"staff {row['user_id']} event {event_id[-12:]} at {row['removed_at']}",
            )


# ---------------------------------------------------------------- helpers


def _mark(event: dict[str, Any]) -> str | None:
    for prop in event.get("singleValueExtendedProperties") or []:
        if prop["id"].lower() == MARK_PROPERTY_ID.lower() and parse_mark(prop["value"]):
            return str(prop["value"])
    return None


def _utc(value: str) -> datetime:
    return datetime.fromisoformat(value[:19]).replace(tzinfo=UTC)


def _epoch(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
