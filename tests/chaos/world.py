"""The people and the weather of a chaos run: Coconut admins and customers, branch staff in
Outlook, and the faults that strike the system while they work.

Each step of the schedule is carried out here against the emulators' public surfaces: the
Coconut admin API (the emulator then sends its signed webhooks), the Graph emulator's owner API
(the staff member's own Outlook, which fires real notifications), their fault switches, and the
processes themselves. What was done, to which real id and when, is kept in `history`, which the
oracle reads to tell a justified busy-block removal from one without a reason.
"""

from __future__ import annotations

import logging
import queue
import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import redis
from tenacity import retry, retry_if_exception, stop_after_delay, wait_fixed

from core import connection, jobs, store
from core.job_kinds import JobKind
from core.secrets import SecretBox
from tests.chaos.schedule import Step
from tests.chaos.system import ChaosSystem
from tests.harness import (
    COCONUT_CLIENT_ID,
    COCONUT_CLIENT_SECRET,
    GRAPH_CLIENT_ID,
    GRAPH_CLIENT_SECRET,
    SECRET_KEY,
    TENANT,
    wait_until,
)
from workers import busy_time
from workers.marks import MARK_PROPERTY_ID

log = logging.getLogger(__name__)

API = "/api/v2/b2b"
DOMAIN = "contoso.example"
# Removing a busy block needs one of these in the event's history (or the item being gone).
POSITIVE_SIGNALS = {"cancel_event", "delete_event", "delete_occurrence", "made_free"}
# A Coconut admin deleting our block removes it themselves; the service must make it again.
TAMPERED = "busy_block_deleted_in_coconut"
SERVICE_ACCOUNT = "user1@contoso.example"  # the run has no other mailbox; app-only uses none
PAST_DAYS, FUTURE_DAYS = 7, 180  # the workers' window, as the environment sets it


class Transient(Exception):
    """The emulator answered 429 or 5xx (an armed fault, or its rate limit): try again."""


def _transient(exc: BaseException) -> bool:
    return isinstance(exc, Transient | httpx.TransportError)


@dataclass
class Record:
    """One Outlook event the schedule made, as the staff member last left it."""

    mailbox: str  # address
    event_id: str
    start: datetime
    end: datetime
    zone: str  # the Windows zone the event was written in
    all_day: bool
    series: bool
    subject: str
    sensitivity: str


@dataclass
class World:
    system: ChaosSystem
    seed: int
    appointments: dict[str, int] = field(default_factory=dict)  # handle -> Coconut id
    blocks: dict[str, int] = field(default_factory=dict)  # handle -> Coconut absence id
    events: dict[str, Record] = field(default_factory=dict)
    history: list[tuple[float, str, str]] = field(default_factory=list)  # (at, kind, event id)
    secrets_seen: set[str] = field(default_factory=set)  # subjects that must never leak
    series_of: dict[str, str] = field(default_factory=dict)  # occurrence id -> master id
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    lane: queue.Queue[tuple[Any, tuple[Any, ...]] | None] = field(default_factory=queue.Queue)
    process_faults: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    tampered: set[str] = field(default_factory=set)  # mailboxes whose blocks an admin changed
    # When the admin's Disconnect removed what the sync made: removals then need no signal.
    disconnects: list[tuple[float, float]] = field(default_factory=list)
    wiped_at: float = 0.0  # when Redis last lost everything: hints accepted before it are gone
    backup: list[tuple[bytes, bytes | None, int]] = field(default_factory=list)
    timers: list[threading.Timer] = field(default_factory=list)  # faults that lift themselves

    def __post_init__(self) -> None:
        self.coconut = self.system.coconut_http()
        self.graph = self.system.graph_http()
        form = {
            "grant_type": "client_credentials",
            "client_id": COCONUT_CLIENT_ID,
            "client_secret": COCONUT_CLIENT_SECRET,
        }
        token = self._coconut("POST", f"{API}/oauth/token", data=form)
        self.coconut.headers["Authorization"] = f"Bearer {token['access_token']}"
        users = self.system.graph_state()["users"]
        self.zones = {u["mail"]: u["timeZone"] for u in users}
        # Process faults take seconds: one at a time, in a lane of their own, while the staff
        # and customers go on.
        self._lane = threading.Thread(target=self._run_lane, name="chaos-process-faults")
        self._lane.start()

    def settle(self) -> None:
        """Wait for the process faults still in their lane, then clear every armed fault."""
        if self._lane.is_alive():
            self.lane.put(None)
            self._lane.join()
        self._stop_timers()
        self.graph.delete("/_emulator/faults").raise_for_status()
        self.coconut.delete("/_emulator/faults").raise_for_status()
        self._refuse_long_blocks(None)

    def _stop_timers(self) -> None:
        """Faults due to lift themselves are lifted now, and never after the world closed."""
        for timer in self.timers:
            timer.cancel()
            timer.join()

    def close(self) -> None:
        if self._lane.is_alive():
            self.lane.put(None)
            self._lane.join()
        self._stop_timers()
        self.coconut.close()
        self.graph.close()

    # -- carrying out one step ----------------------------------------------------------------
    def apply(self, step: Step) -> None:
        action = getattr(self, f"_do_{step.kind}")
        outcome = action(**step.args)
        (self.skipped if outcome == "skipped" else self.done).append(step.kind)

    # -- Coconut: customers book, admins change -------------------------------------------
    @retry(
        retry=retry_if_exception(_transient),
        wait=wait_fixed(0.5),
        stop=stop_after_delay(60),
        reraise=True,
    )
    def _coconut(self, method: str, path: str, **kwargs: Any) -> Any:
        answer = self.coconut.request(method, path, **kwargs)
        if answer.status_code == 429 or answer.status_code >= 500:
            raise Transient(f"{method} {path}: {answer.status_code}")
        if answer.status_code >= 300:
            raise AssertionError(f"{method} {path}: {answer.status_code} {answer.text[:300]}")
        return answer.json() if answer.content else None

    def _document(
        self, kind: str, attrs: dict[str, Any], record_id: int | None = None, **extra: Any
    ) -> dict[str, Any]:
        data: dict[str, Any] = {"type": kind, "attributes": attrs, **extra}
        if record_id is not None:
            data["id"] = str(record_id)
        return {"data": data}

    def _local(self, day: int, hour: int, minute: int, zone: str) -> datetime:
        today = datetime.now(ZoneInfo(zone)).date() + timedelta(days=day)
        return datetime(today.year, today.month, today.day, hour, minute, tzinfo=ZoneInfo(zone))

    def _do_book(
        self,
        handle: str,
        staff: int,
        extra: list[int],
        service: int,
        client: int,
        day: int,
        hour: int,
        minute: int,
    ) -> None:
        location = 1 if staff % 2 else 2
        zone = "America/Toronto" if location == 1 else "America/Regina"
        start = self._local(day, hour, minute, zone)
        attrs = {
            "start": start.isoformat(),
            "staff_id": staff,
            "additional_staff_id": extra,
            "location_id": location,
            "service_id": [service],
        }
        rel = {"attendees": {"data": [{"type": "clients", "id": str(client)}]}}
        body = self._document("appointments", attrs, relationships=rel)
        made = self._coconut("POST", f"{API}/appointments", json=body)
        self.appointments[handle] = int(made["data"]["id"])

    def _patch_appointment(self, handle: str, attrs: dict[str, Any]) -> None:
        appointment_id = self.appointments[handle]
        body = self._document("appointments", attrs, appointment_id)
        self._coconut("PATCH", f"{API}/appointments/{appointment_id}", json=body)

    def _do_reschedule(self, handle: str, day: int, hour: int, minute: int) -> None:
        current = self._coconut("GET", f"{API}/appointments/{self.appointments[handle]}")
        zone = current["data"]["attributes"]["timezone"]
        self._patch_appointment(handle, {"start": self._local(day, hour, minute, zone).isoformat()})

    def _do_edit(self, handle: str, service: int) -> None:
        self._patch_appointment(handle, {"service_id": [service]})

    def _do_reassign(self, handle: str, staff: int) -> None:
        self._patch_appointment(handle, {"staff_id": staff, "additional_staff_id": []})

    def _do_cancel(self, handle: str) -> None:
        self._patch_appointment(handle, {"status": "cancelled"})

    def _do_block(
        self, handle: str, staff: int, hours: int, all_day: bool, day: int, hour: int, minute: int
    ) -> None:
        zone = self._staff_zone(staff)
        start = self._local(day, 0 if all_day else hour, 0 if all_day else minute, zone)
        end = start + (timedelta(days=1) if all_day else timedelta(hours=hours))
        attrs = {
            "user_id": staff,
            "start": start.isoformat(),
            "end": end.isoformat(),
            "all_day": all_day,
            "source": "coconut",
            "title": f"Away {handle}",
        }
        made = self._coconut("POST", f"{API}/absences", json=self._document("absences", attrs))
        self.blocks[handle] = int(made["data"]["id"])

    def _do_move_block(self, handle: str, day: int, hour: int, minute: int) -> None:
        absence_id = self.blocks[handle]
        current = self._coconut("GET", f"{API}/absences/{absence_id}")["data"]["attributes"]
        start = self._local(day, hour, minute, current["timezone"])
        length = datetime.fromisoformat(current["end"]) - datetime.fromisoformat(current["start"])
        if current["all_day"]:
            start = start.replace(hour=0, minute=0)
        attrs = {"start": start.isoformat(), "end": (start + length).isoformat()}
        body = self._document("absences", attrs, absence_id)
        self._coconut("PATCH", f"{API}/absences/{absence_id}", json=body)

    def _do_unblock(self, handle: str) -> None:
        self._coconut("DELETE", f"{API}/absences/{self.blocks.pop(handle)}")

    def _do_tamper_busy_block(self, staff: int, action: str, pick: float) -> str | None:
        """A Coconut admin changes one of our busy blocks: no webhook tells the service (Coconut
        sends none for external absences), so only a full reconciliation puts it back."""
        ours = sorted(
            (a for a in self.system.coconut_state()["absences"]
             if a["source"] == "external" and a["user_id"] == staff),
            key=lambda a: a["id"],
        )  # fmt: skip
        if not ours:
            return "skipped"
        block = ours[min(int(pick * len(ours)), len(ours) - 1)]
        address = f"user{staff}@{DOMAIN}"
        self.tampered |= {u["id"] for u in self.system.graph_state()["users"]
                          if u["mail"] == address}  # fmt: skip
        path = f"{API}/absences/{block['id']}"
        if action == "delete":
            self._note(TAMPERED, block["external_id"])
            request: dict[str, Any] = {}
        else:
            attrs: dict[str, Any] = {"title": "Free for walk-ins"}
            if action == "move":
                start = datetime.fromisoformat(block["start"]) + timedelta(hours=2)
                end = datetime.fromisoformat(block["end"]) + timedelta(hours=2)
                attrs = {"start": start.isoformat(), "end": end.isoformat()}
            request = {"json": self._document("absences", attrs, block["id"])}
        try:
            self._coconut("DELETE" if action == "delete" else "PATCH", path, **request)
        except AssertionError as exc:
            if ": 404 " in str(exc):
                return "skipped"  # the service removed it meanwhile (its event went)
            raise
        return None

    def _staff_zone(self, staff: int) -> str:
        user = self._coconut("GET", f"{API}/users/{staff}")
        return str(user["data"]["attributes"]["timezone"])

    # -- Outlook: staff members in their own calendars ------------------------------------
    def _owner(self, method: str, path: str, **kwargs: Any) -> Any:
        answer = self.graph.request(method, f"/_emulator/users/{path}", **kwargs)
        if answer.status_code >= 300:
            raise AssertionError(f"{method} {path}: {answer.status_code} {answer.text[:300]}")
        return answer.json() if answer.content else None

    def _note(self, kind: str, event_id: str) -> None:
        self.history.append((time.time(), kind, event_id))

    def _do_create(
        self,
        handle: str,
        mailbox: int,
        series: bool,
        pattern: str,
        all_day: bool,
        days: int,
        hours: int,
        show_as: str,
        sensitivity: str,
        day: int,
        hour: int,
        minute: int,
    ) -> None:
        address = f"user{mailbox}@{DOMAIN}"
        zone = self.zones[address]
        local = self._local(
            day, 0 if all_day else hour, 0 if all_day else minute, busy_time.iana_zone(zone)
        )
        end = local + (timedelta(days=days) if all_day else timedelta(hours=hours))
        secret = sensitivity != "normal"
        subject = f"Secret {secrets.token_hex(6)}" if secret else f"Meeting {handle}"
        if secret:
            self.secrets_seen.add(subject)
        body: dict[str, Any] = {
            "subject": subject,
            "showAs": show_as,
            "sensitivity": sensitivity,
            "isAllDay": all_day,
            "start": _when(local, zone),
            "end": _when(end, zone),
            "body": {"contentType": "text", "content": f"notes for {subject}"},
        }
        if series:
            body["recurrence"] = _recurrence(pattern, local)
        made = self._owner("POST", f"{address}/events", json=body)
        self.events[handle] = Record(
            address, made["id"], local, end, zone, all_day, series, subject, sensitivity
        )
        self._note("create", made["id"])
        if series:
            for inst in self.calendar_view(address):
                if inst.get("seriesMasterId") == made["id"]:
                    self.series_of[inst["id"]] = made["id"]

    def _patch_event(self, handle: str, kind: str, body: dict[str, Any]) -> None:
        record = self.events[handle]
        self._owner("PATCH", f"{record.mailbox}/events/{record.event_id}", json=body)
        self._note(kind, record.event_id)

    def _do_move(self, handle: str, hours: int) -> None:
        record = self.events[handle]
        if record.all_day:
            shift = timedelta(days=1 if hours > 0 else -1)
        elif record.series:  # within the same days: the occurrences keep their ids
            shift = timedelta(hours=1 if record.start.hour < 15 else -1)
        else:
            shift = timedelta(hours=hours)
        record.start, record.end = record.start + shift, record.end + shift
        self._patch_event(
            handle,
            "move",
            {"start": _when(record.start, record.zone), "end": _when(record.end, record.zone)},
        )

    def _do_retitle(self, handle: str) -> None:
        record = self.events[handle]
        if record.sensitivity != "normal":
            record.subject = f"Secret {secrets.token_hex(6)}"
            self.secrets_seen.add(record.subject)
        else:
            record.subject = f"{record.subject.split(' (')[0]} ({secrets.token_hex(2)})"
        self._patch_event(handle, "retitle", {"subject": record.subject})

    def _do_make_private(self, handle: str) -> None:
        record = self.events[handle]
        # From now on this subject must not be shown in Coconut; give it a fresh secret one so
        # the check can also search Redis and the logs for it.
        record.sensitivity, record.subject = "private", f"Secret {secrets.token_hex(6)}"
        self.secrets_seen.add(record.subject)
        self._patch_event(
            handle, "make_private", {"sensitivity": "private", "subject": record.subject}
        )

    def _do_toggle_free(self, handle: str, show_as: str) -> None:
        freed = show_as not in busy_time.BLOCKING
        self._patch_event(handle, "made_free" if freed else "made_busy", {"showAs": show_as})

    def _do_cancel_event(self, handle: str) -> None:
        self._patch_event(handle, "cancel_event", {"isCancelled": True})

    def _do_delete_event(self, handle: str) -> None:
        record = self.events.pop(handle)
        self._owner("DELETE", f"{record.mailbox}/events/{record.event_id}")
        self._note("delete_event", record.event_id)

    def _do_delete_occurrence(self, handle: str, nth: int) -> str | None:
        record = self.events[handle]
        occurrences = [
            i
            for i in self.calendar_view(record.mailbox)
            if i.get("seriesMasterId") == record.event_id
        ]
        if not occurrences:
            return "skipped"
        victim = occurrences[nth % len(occurrences)]["id"]
        self._owner("DELETE", f"{record.mailbox}/events/{victim}")
        self._note("delete_occurrence", victim)
        return None

    def _our_event(self, handle: str) -> tuple[str, dict[str, Any]] | None:
        appointment_id = self.appointments.get(handle)
        if appointment_id is None:
            return None
        mark = f"exsync:appointment:{appointment_id}"
        state = self.system.graph_state()
        mails = {u["id"]: u["mail"] for u in state["users"]}
        for user_id, events in state["events"].items():
            for event in events:
                props = event.get("singleValueExtendedProperties") or []
                if any(
                    p["id"].lower() == MARK_PROPERTY_ID.lower() and p["value"] == mark
                    for p in props
                ):
                    return mails[user_id], event
        return None

    def _do_edit_projection(self, handle: str, hours: int) -> str | None:
        found = self._our_event(handle)
        if found is None:
            return "skipped"
        address, event = found
        start = datetime.fromisoformat(event["start"]["dateTime"][:19]) + timedelta(hours=hours)
        end = datetime.fromisoformat(event["end"]["dateTime"][:19]) + timedelta(hours=hours)
        self._owner(
            "PATCH",
            f"{address}/events/{event['id']}",
            json={
                "subject": "Moved by staff",
                "start": _when(start, "UTC"),
                "end": _when(end, "UTC"),
            },
        )
        return None

    def _do_delete_projection(self, handle: str, hours: int) -> str | None:
        found = self._our_event(handle)
        if found is None:
            return "skipped"
        address, event = found
        self._owner("DELETE", f"{address}/events/{event['id']}")
        return None

    def calendar_view(
        self, address: str, start: datetime | None = None, end: datetime | None = None
    ) -> list[dict[str, Any]]:
        """The mailbox's instances in the window (default: a year either side), in UTC."""
        now = datetime.now(UTC)
        start, end = start or now - timedelta(days=365), end or now + timedelta(days=365)
        params = {"startDateTime": start.isoformat(), "endDateTime": end.isoformat()}
        answer = self.graph.get(f"/_emulator/users/{address}/calendarView", params=params)
        answer.raise_for_status()
        return list(answer.json()["value"])

    # -- faults ---------------------------------------------------------------------------
    def _graph_fault(self, **spec: Any) -> None:
        armed = self.graph.post("/_emulator/faults", json=spec)
        if armed.status_code >= 300:
            raise AssertionError(f"arming {spec}: {armed.status_code} {armed.text}")

    def _coconut_fault(self, kind: str, **spec: Any) -> None:
        armed = self.coconut.post(f"/_emulator/faults/{kind}", json=spec)
        if armed.status_code >= 300:
            raise AssertionError(f"arming {kind} {spec}: {armed.status_code} {armed.text}")

    def _throttled_ahead(self) -> int:
        """How many throttled answers the armed faults still hold back."""
        armed = self.system.graph_state().get("faults", [])
        return sum(f.get("count") or 0 for f in armed if f["kind"] in THROTTLES)

    def _do_throttle(self, status: int, count: int, retry_after: int) -> str | None:
        if self._throttled_ahead() >= THROTTLE_BACKLOG:
            return "skipped"
        self._graph_fault(kind="throttle", status=status, count=count, retry_after=retry_after)
        return None

    def _do_notification_drop(self, count: int) -> None:
        self._graph_fault(kind="notification_drop", count=count)

    def _do_notification_duplicate(self, count: int) -> None:
        self._graph_fault(kind="notification_duplicate", count=count)

    def _do_notification_delay(self, count: int, seconds: int) -> None:
        self._graph_fault(kind="notification_delay", count=count, seconds=seconds)

    def _do_notification_reorder(self, batch: int) -> None:
        self._graph_fault(kind="notification_reorder", batch=batch, hold_seconds=2)

    def _subscription_of(self, mailbox: int) -> str | None:
        address = f"user{mailbox}@{DOMAIN}"
        state = self.system.graph_state()
        uid = next(u["id"] for u in state["users"] if u["mail"] == address)
        return next((s["id"] for s in state["subscriptions"] if s["mailbox"] == uid), None)

    def _do_subscription_expire(self, mailbox: int) -> str | None:
        sub = self._subscription_of(mailbox)
        if sub is None:
            return "skipped"
        self.graph.post(f"/_emulator/subscriptions/{sub}/expire").raise_for_status()
        return None

    def _lifecycle(self, mailbox: int, event: str) -> str | None:
        sub = self._subscription_of(mailbox)
        if sub is None:
            return "skipped"
        sent = self.graph.post(f"/_emulator/subscriptions/{sub}/lifecycle", json={"event": event})
        sent.raise_for_status()
        return None

    def _do_subscription_removed(self, mailbox: int) -> str | None:
        return self._lifecycle(mailbox, "subscriptionRemoved")

    def _do_subscription_missed(self, mailbox: int) -> str | None:
        return self._lifecycle(mailbox, "missed")

    def _do_delta_expire(self) -> None:
        self._graph_fault(kind="expire_delta")

    def _uid(self, mailbox: int) -> str:
        address = f"user{mailbox}@{DOMAIN}"
        return next(u["id"] for u in self.system.graph_state()["users"] if u["mail"] == address)

    def _do_fail_after_write(self, count: int) -> None:
        self._graph_fault(kind="fail_after_write", status=503, method="POST", count=count)

    def _do_lifecycle_storm(self, mailbox: int, times: int) -> str | None:
        for _ in range(times):
            if self._lifecycle(mailbox, "reauthorizationRequired") == "skipped":
                return "skipped"
        return None

    def _do_concurrency_throttle(self, count: int, retry_after: int | None) -> str | None:
        if self._throttled_ahead() >= THROTTLE_BACKLOG:
            return "skipped"
        spec = {} if retry_after is None else {"retry_after": retry_after}
        self._graph_fault(kind="concurrency_throttle", count=count, **spec)
        return None

    def _do_delta_misbehave(self, mailbox: int, mode: str) -> None:
        """Until the schedule ends: the mailbox is then read by calendarView instead."""
        spec: dict[str, Any] = {"kind": f"delta_{mode}", "mailbox": self._uid(mailbox)}
        if mode == "empty_pages":
            spec["pages"] = 3
        if mode == "unavailable":
            spec |= {"status": 503, "series": 1, "retry_after": 0}
        self._graph_fault(**spec)

    def _do_notification_batch(self, window: float, size: int) -> None:
        self._graph_fault(kind="notification_batch", window=window, size=size)

    def _do_delivery_duplicate(self, count: int) -> None:
        self._coconut_fault("delivery_duplicate", count=count)

    def _do_delivery_drop(self, count: int) -> None:
        self._coconut_fault("delivery_drop", count=count)

    def _do_delivery_delay(self, count: int) -> None:
        self._coconut_fault("delivery_delay", count=count, seconds=2.0)

    def _do_delivery_reorder(self, batch: int) -> None:
        self._coconut_fault("delivery_reorder", count=1, batch=batch, hold_seconds=2.0)

    def _do_coconut_error(self, count: int) -> None:
        self._coconut_fault("api_error", count=count, status=503, retry_after=1)

    def _run_lane(self) -> None:
        while (item := self.lane.get()) is not None:
            action, args = item
            try:
                outcome = action(*args)
            except Exception as exc:  # reported, and the run fails on it
                self.errors.append(f"{action.__name__}: {exc!r}")
                continue
            self.process_faults.append(f"{action.__name__}: {outcome}")

    def _do_kill_worker(self) -> None:
        self.lane.put((self.system.kill_busy_worker, ()))

    def _do_restart_redis(self, down: float) -> None:
        self.lane.put((self.system.restart_redis, (down,)))

    def _do_restart_web(self) -> None:
        self.lane.put((self.system.restart_web, ()))

    def _do_reconnect(self, remove: bool) -> None:
        self.lane.put((self._reconnect, (remove,)))

    def _do_wipe_redis(self) -> None:
        self.lane.put((self._wipe_redis, ()))

    def _do_restore_snapshot(self) -> str | None:
        if not self.backup:
            return "skipped"
        self.lane.put((self._restore_snapshot, ()))
        return None

    def _do_coconut_refuses(self, seconds: int) -> None:
        """Coconut refuses blocks longer than a day for a while (max_absence_days)."""
        self._refuse_long_blocks(1)
        lift = threading.Timer(seconds, self._refuse_long_blocks, (None,))
        self.timers.append(lift)
        lift.start()

    def _refuse_long_blocks(self, days: int | None) -> None:
        answer = self.coconut.patch("/_emulator/settings", json={"max_absence_days": days})
        answer.raise_for_status()

    def take_backup(self) -> None:
        """What a nightly backup would hold: every key with its time to live."""
        conn = redis.Redis.from_url(self.system.redis_url)
        self.backup = [(key, conn.dump(key), conn.pttl(key)) for key in conn.scan_iter(count=1000)]
        conn.close()

    def _restore_snapshot(self) -> str:
        """Redis restored from the backup (its mappings, cursors and subscriptions older than
        what the calendars hold); the admin authorizes again."""
        conn = redis.Redis.from_url(self.system.redis_url)
        conn.flushall()
        for key, value, ttl in self.backup:
            if value is not None:
                conn.restore(key, max(ttl, 0), value, replace=True)
        self.wiped_at = time.time()
        self._authorize_again(conn)
        conn.close()
        return f"restored {len(self.backup)} keys"

    def _reconnect(self, remove: bool) -> str:
        """What the Disconnect button does (status, then the job), then Authorize again. The
        run starts on its environment's app registration, which has nothing to disconnect: the
        first time, the admin saves the same registration on the Configuration tab and
        authorizes it (as after a Redis wipe, which takes the stored connection with it)."""
        conn = redis.Redis.from_url(self.system.redis_url)
        if connection.load(conn).status != connection.Status.CONNECTED:
            self._configure_and_authorize(conn)
        began = time.time()
        connection.mark_disconnecting(conn)
        conn.delete(store.disconnect_key())
        what = "everything" if remove else "subscriptions"
        jobs.ensure_queued(jobs.queue("exsync", conn), JobKind.DISCONNECT, what)
        # As an admin waits for the page to say Disconnected (behind whatever the queue holds),
        # and clicks Disconnect again if its job gave up (Graph throttling it for minutes).
        queue = jobs.queue("exsync", conn)

        def done() -> bool:
            if conn.hget(store.disconnect_key(), "done"):
                return True
            if conn.hget(f"rq:job:disconnect-{what}", "status") == b"failed":
                jobs.ensure_queued(queue, JobKind.DISCONNECT, what)
            return False

        wait_until(done, 900, interval=1.0, what="disconnect")
        self.disconnects.append((began, time.time()))
        self._authorize(conn)
        conn.close()
        return what

    def _configure_and_authorize(self, conn: redis.Redis) -> None:
        config = connection.Connection(
            tenant_id=TENANT, graph_url=f"{self.system.graph_base}/v1.0",
            authority=self.system.graph_base, client_id=GRAPH_CLIENT_ID, impersonation=True,
            show_event_titles=True, service_account=SERVICE_ACCOUNT, sync_past_days=PAST_DAYS,
            sync_future_days=FUTURE_DAYS,
        )  # fmt: skip
        connection.save_configuration(conn, SecretBox(SECRET_KEY), config, GRAPH_CLIENT_SECRET)
        self._authorize(conn)

    def _authorize(self, conn: redis.Redis) -> None:
        """What the OAuth callback does once the service account signed in (app-only access:
        the refresh token is not what the workers use)."""
        connection.mark_connected(conn, SecretBox(SECRET_KEY), "refresh-token", SERVICE_ACCOUNT)
        jobs.ensure_queued(jobs.queue("exsync", conn), JobKind.INITIAL_SYNC, "exchange")

    def _wipe_redis(self) -> str:
        """Everything Redis held is gone (a new instance, no AOF); the admin authorizes again."""
        conn = redis.Redis.from_url(self.system.redis_url)
        conn.flushall()
        self.wiped_at = time.time()
        self._authorize_again(conn)
        conn.close()
        return "wiped"

    def _authorize_again(self, conn: redis.Redis) -> None:
        """After Redis lost its data: the admin authorizes the stored connection again, or, with
        none stored (the environment's registration), Authorize's initial sync is all there is."""
        if connection.load(conn).status == connection.Status.NOT_CONFIGURED:
            jobs.ensure_queued(jobs.queue("exsync", conn), JobKind.INITIAL_SYNC, "exchange")
        else:
            self._authorize(conn)


def _when(local: datetime, zone: str) -> dict[str, str]:
    """Graph's dateTimeTimeZone: the wall time and the (Windows or IANA) zone it is in."""
    return {"dateTime": local.replace(tzinfo=None).isoformat(timespec="seconds"), "timeZone": zone}


WEEK_INDEX = ["first", "second", "third", "fourth", "last"]
THROTTLES = frozenset({"throttle", "concurrency_throttle"})
# Graph throttles in bursts: while a quiet system has not yet met this many throttled answers
# already armed, a new burst is not piled on (a long run otherwise queues hundreds, and an
# admin's Disconnect waits behind all of them).
THROTTLE_BACKLOG = 30


def _recurrence(pattern: str, local: datetime) -> dict[str, Any]:
    """Four occurrences of a weekly or daily series, or two of a relative monthly one (the
    same weekday in the same week of the month, "the second Tuesday")."""
    weekday = local.strftime("%A").lower()
    shape: dict[str, Any] = {"type": pattern, "interval": 1}
    if pattern in ("weekly", "relativeMonthly"):
        shape["daysOfWeek"] = [weekday]
    if pattern == "relativeMonthly":
        shape["index"] = WEEK_INDEX[min((local.day - 1) // 7, 4)]
    count = 2 if pattern == "relativeMonthly" else 4
    return {
        "pattern": shape,
        "range": {
            "type": "numbered",
            "startDate": local.date().isoformat(),
            "numberOfOccurrences": count,
        },
    }
