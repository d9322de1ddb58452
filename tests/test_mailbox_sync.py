"""Outlook events become busy time in Coconut (issue 4), over the real path: the Graph emulator
POSTs real change notifications to the running web app for the subscriptions the scheduler
made, a real `exsync worker` reads delta through msgraph-sdk and writes Coconut's API.

Seed: user1-3@contoso.example are Coconut staff 1-3 (Toronto, Vancouver, Regina); each mailbox
starts with a meeting, a private doctor's visit, an all-day conference and a weekly series.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import redis

from core import jobs
from core.admin_accounts import add_token
from tests.harness import TENANT, System, wait_until
from tests.sync_support import Outlook, at, busy_blocks, wait_blocks

USER1, STAFF1 = "user1@contoso.example", 1
QUIET = {  # notifications must carry these tests: no safety net, no polling in between
    "EXSYNC_SAFETY_NET_SECONDS": "3600",
    "EXSYNC_RECONCILE_SECONDS": "3600",
    "EXSYNC_SHOW_EVENT_TITLES": "true",
}


def subscribed(system: System) -> bool:
    return len(system.graph_state()["subscriptions"]) == 3


def subscribed_system(make_system, **settings: str) -> System:  # type: ignore[no-untyped-def]
    """The whole system with a scheduler, once each staff mailbox has its subscription."""
    system = make_system(
        graph_args=["--users", "3"], scheduler=True, settings={**QUIET, **settings}
    )
    wait_until(lambda: subscribed(system), 60, what="a subscription per staff mailbox")
    return system


@pytest.fixture
def system(make_system) -> System:  # type: ignore[no-untyped-def]
    system = subscribed_system(make_system)
    wait_until(lambda: len(busy_blocks(system, STAFF1)) >= 11, 60, what="the seeded events")
    return system


@pytest.fixture
def outlook(system: System) -> Iterator[Outlook]:
    owner = Outlook(system)
    yield owner
    owner.http.close()


def day(offset: int) -> datetime:
    return (datetime.now(UTC) + timedelta(days=offset)).replace(minute=0, second=0, microsecond=0)


def titled(title: str) -> Any:
    return lambda blocks: [b for b in blocks if b["title"] == title]


def instant(value: str) -> datetime:
    return datetime.fromisoformat(value).astimezone(UTC)


def test_an_outlook_event_is_busy_time_that_follows_every_change(
    system: System, outlook: Outlook
) -> None:
    d = day(4)
    agenda = {"contentType": "text", "content": "agenda"}
    event = outlook.create(
        USER1,
        subject="Credit committee",
        start=at(d, 14),
        end=at(d, 15),
        showAs="busy",
        body=agenda,
    )
    (block,) = titled("Credit committee")(
        wait_blocks(system, STAFF1, titled("Credit committee"), what="the new block")
    )
    assert block["external_id"] == event and block["external_provider"] == "microsoft_exchange"
    assert (instant(block["start"]), instant(block["end"])) == (
        d.replace(hour=14),
        d.replace(hour=15),
    )
    assert block["all_day"] is False and block["notes"] is None  # the body is never copied

    outlook.update(USER1, event, start=at(d, 16), end=at(d, 17))
    wait_blocks(system, STAFF1, lambda bs: any(
        b["title"] == "Credit committee" and instant(b["start"]) == d.replace(hour=16) for b in bs
    ), what="the moved block")  # fmt: skip

    outlook.update(USER1, event, subject="Credit committee (final)")
    wait_blocks(system, STAFF1, titled("Credit committee (final)"), what="the new title")

    outlook.update(USER1, event, sensitivity="private")

    def private_now(bs: list[dict[str, Any]]) -> bool:
        return any(b["external_id"] == event and b["title"] == "Busy" for b in bs)

    blocks = wait_blocks(system, STAFF1, private_now, what="a private block")
    (private,) = [b for b in blocks if b["external_id"] == event]
    assert private["title"] == "Busy"
    assert "Credit committee" not in str(system.coconut_state()["absences"])

    outlook.update(USER1, event, showAs="free")
    wait_blocks(system, STAFF1, lambda bs: all(b["external_id"] != event for b in bs),
                what="a free event to stop blocking")  # fmt: skip
    outlook.update(USER1, event, showAs="oof")
    wait_blocks(system, STAFF1, lambda bs: any(b["external_id"] == event for b in bs),
                what="an away event to block again")  # fmt: skip
    outlook.delete(USER1, event)
    wait_blocks(system, STAFF1, lambda bs: all(b["external_id"] != event for b in bs),
                what="the deleted event's block to go")  # fmt: skip


def test_all_day_multi_day_recurring_and_zoned_events(system: System, outlook: Outlook) -> None:
    d = day(6).replace(hour=0)
    outlook.create(USER1, subject="Offsite", isAllDay=True, showAs="oof",
                   start=at(d, 0), end=at(d + timedelta(days=2), 0))  # fmt: skip
    outlook.create(USER1, subject="Lunch in Berlin", showAs="busy",
                   start=at(d, 12, "W. Europe Standard Time"),
                   end=at(d, 13, "W. Europe Standard Time"))  # fmt: skip
    outlook.create(USER1, subject="Gym", showAs="free", start=at(d, 7), end=at(d, 8))
    outlook.create(USER1, subject="From home", showAs="workingElsewhere",
                   start=at(d, 9), end=at(d, 10))  # fmt: skip
    outlook.create(USER1, subject="Maybe", showAs="tentative", start=at(d, 15), end=at(d, 16))
    outlook.create(USER1, subject="Therapy", sensitivity="private", showAs="busy",
                   start=at(d + timedelta(days=1), 8), end=at(d + timedelta(days=1), 9),
                   recurrence=weekly(d + timedelta(days=1), 3))  # fmt: skip
    series = outlook.create(USER1, subject="Stand-up", showAs="busy",
                            start=at(d, 10), end=at(d, 11), recurrence=weekly(d, 4))  # fmt: skip

    def all_kinds(bs: list[dict[str, Any]]) -> bool:
        ready = titled("Maybe")(bs) and titled("Offsite")(bs)
        return len(titled("Stand-up")(bs)) == 4 and bool(ready)

    blocks = wait_blocks(system, STAFF1, all_kinds, what="every kind of event")
    (offsite,) = titled("Offsite")(blocks)
    toronto = "-05:00" if d.month in (11, 12, 1, 2) else "-04:00"
    assert offsite["all_day"] is True and offsite["start"].endswith("T00:00:00" + toronto)
    assert instant(offsite["end"]) - instant(offsite["start"]) == timedelta(days=2)
    (berlin,) = titled("Lunch in Berlin")(blocks)
    assert instant(berlin["start"]).hour in (11, 10)  # 12:00 Berlin is 11:00 or 10:00 UTC
    assert not titled("Gym")(blocks) and not titled("From home")(blocks)
    therapy = [b for b in blocks if b["title"] == "Busy"
               and instant(b["start"]).hour == 8 and instant(b["start"]) > d]  # fmt: skip
    assert len(therapy) == 3 and "Therapy" not in str(system.coconut_state()["absences"])

    # An exception (one occurrence moved) and a deleted occurrence.
    stand_ups = sorted(titled("Stand-up")(blocks), key=lambda b: instant(b["start"]))
    occurrences = [b["external_id"] for b in stand_ups]
    assert series not in occurrences, "blocks are per occurrence, not per series"
    outlook.update(USER1, occurrences[1], start=at(d + timedelta(days=7), 13),
                   end=at(d + timedelta(days=7), 14))  # fmt: skip
    outlook.delete(USER1, occurrences[2])
    wait_blocks(system, STAFF1, lambda bs: sorted(
        (instant(b["start"]) - d).days * 100 + instant(b["start"]).hour
        for b in titled("Stand-up")(bs)
    ) == [10, 713, 2110], what="the exception moved and the deleted occurrence gone")  # fmt: skip


def weekly(first: datetime, count: int) -> dict[str, Any]:
    return {
        "pattern": {"type": "weekly", "interval": 1, "daysOfWeek": [first.strftime("%A").lower()]},
        "range": {"type": "numbered", "startDate": first.date().isoformat(),
                  "numberOfOccurrences": count},
    }  # fmt: skip


def test_a_round_that_would_remove_most_blocks_is_held_until_released(
    system: System, outlook: Outlook, redis_conn: redis.Redis
) -> None:
    state = system.graph_state()
    uid = next(u["id"] for u in state["users"] if u["mail"] == USER1)
    before = busy_blocks(system, STAFF1)
    # Staff empties most of the calendar while no worker runs: one round sees it all.
    system.processes["worker-0"].stop()
    for event in state["events"][uid]:
        if event["subject"] in ("Weekly review", "Conference", "Team meeting"):
            outlook.delete(USER1, event["id"])
    system.start_worker(0)
    held = wait_until(
        lambda: redis_conn.hget(f"exsync:mailbox:{uid}", "held_removals"), 30, what="a hold"
    )
    assert int(held) == 10  # 8 weekly occurrences, the conference, the meeting
    assert busy_blocks(system, STAFF1) == before, "nothing removed while held"

    token = add_token(redis_conn, "test-holds")
    auth = {"Authorization": f"Bearer {token}"}
    listed = httpx.get(f"{system.web_url}/admin/holds", headers=auth).json()["holds"]
    assert listed == [{"mailbox": uid, "address": USER1, "held_removals": 10}]
    assert httpx.post(f"{system.web_url}/admin/holds/{uid}/release").status_code == 401
    released = httpx.post(f"{system.web_url}/admin/holds/{uid}/release", headers=auth)
    assert released.status_code == 202, released.text
    left = wait_blocks(system, STAFF1, lambda bs: len(bs) == len(before) - 10, what="release")
    assert {b["title"] for b in left} == {"Busy"}  # the private visit stays
    # The job forgets each removal right after Coconut confirms it: wait for the last one.
    wait_until(lambda: not redis_conn.exists(f"exsync:held:{uid}"), 10, what="holds cleared")


def notify(system: System, items: list[dict[str, Any]]) -> httpx.Response:
    return httpx.post(f"{system.web_url}/webhooks/graph", json={"value": items}, timeout=10)


def our_subscription(redis_conn: redis.Redis, uid: str) -> tuple[str, str]:
    """(subscription id, clientState) of the mailbox's subscription; ("", "") between two."""
    sub_id = (redis_conn.get(f"exsync:subscription_of:{uid}") or b"").decode()
    client_state = redis_conn.hget(f"exsync:subscription:{sub_id}", "client_state") or b""
    return sub_id, client_state.decode()


def mailbox_id(system: System, address: str) -> str:
    return next(u["id"] for u in system.graph_state()["users"] if u["mail"] == address)


def test_a_burst_of_1000_notifications_costs_at_most_3_delta_rounds(
    system: System, redis_conn: redis.Redis
) -> None:
    uid = mailbox_id(system, USER1)
    sub_id, client_state = our_subscription(redis_conn, uid)
    wait_until(lambda: jobs.queue("exsync", redis_conn).count == 0, 30, what="quiet")
    before = system.graph_state()["counters"]["delta_rounds"].get(uid, 0)
    item = {"subscriptionId": sub_id, "clientState": client_state, "changeType": "updated",
            "resource": f"Users/{uid}/Events/x", "tenantId": TENANT}  # fmt: skip

    # Graph delivers a burst batched, many notifications to a POST, within a second or two;
    # 1,000 one-item POSTs would take far longer on a loaded machine and be a slow trickle.
    def send(_: int) -> int:
        return notify(system, [item] * 100).status_code

    with ThreadPoolExecutor(max_workers=10) as pool:
        statuses = list(pool.map(send, range(10)))
    assert set(statuses) == {202}
    wait_until(lambda: not redis_conn.exists(f"exsync:dirty:mailbox:{uid}"), 60, what="drained")
    rounds = system.graph_state()["counters"]["delta_rounds"][uid] - before
    print(f"1000 notifications -> {rounds} delta round(s)")
    assert 1 <= rounds <= 3, rounds


def test_a_notification_of_a_state_we_already_hold_starts_no_round(
    system: System, redis_conn: redis.Redis
) -> None:
    """Outlook's `updated` after `created`, or the echo of an event we wrote, names a changeKey
    we already hold (webhooks.echoes): it is heard, and costs no delta round. A new changeKey, or
    a deletion, is news."""
    uid = mailbox_id(system, USER1)
    sub_id, client_state = our_subscription(redis_conn, uid)
    wait_until(lambda: jobs.queue("exsync", redis_conn).count == 0, 30, what="quiet")
    (events,) = [evs for mailbox, evs in system.graph_state()["events"].items() if mailbox == uid]
    blocks = {
        k.decode(): json.loads(v) for k, v in redis_conn.hgetall(f"exsync:block:{uid}").items()
    }
    event = next(e for e in events if e["id"] in blocks and e["type"] == "singleInstance")
    assert blocks[event["id"]]["version"] == event["changeKey"]  # what the block was made from

    def notification(change: str, change_key: str) -> dict[str, Any]:
        resource = f"Users/{uid}/Events/{event['id']}"
        data = {"@odata.type": "#Microsoft.Graph.Event", "@odata.id": resource,
                "@odata.etag": f'W/"{change_key}"', "id": event["id"]}  # fmt: skip
        return {"subscriptionId": sub_id, "clientState": client_state, "changeType": change,
                "resource": resource, "resourceData": data, "tenantId": TENANT}  # fmt: skip

    dirty = f"exsync:dirty:mailbox:{uid}"
    redis_conn.delete(dirty)
    redis_conn.hdel(f"exsync:mailbox:{uid}", "last_notification_at")
    echo = notify(system, [notification("updated", event["changeKey"])] * 3)
    assert echo.status_code == 202, echo.text
    assert not redis_conn.exists(dirty) and jobs.queue("exsync", redis_conn).count == 0
    assert redis_conn.hget(f"exsync:mailbox:{uid}", "last_notification_at")  # heard from

    for news in (notification("updated", "a-newer-change-key"),
                 notification("deleted", event["changeKey"])):  # fmt: skip
        redis_conn.delete(dirty)
        assert notify(system, [news]).status_code == 202
        assert redis_conn.get(dirty) == b"1", news["changeType"]


def test_refused_notifications_enqueue_nothing(system: System, redis_conn: redis.Redis) -> None:
    uid = mailbox_id(system, USER1)
    sub_id, client_state = our_subscription(redis_conn, uid)
    wait_until(lambda: jobs.queue("exsync", redis_conn).count == 0, 30, what="quiet")
    redis_conn.delete(f"exsync:dirty:mailbox:{uid}")
    good = {"subscriptionId": sub_id, "clientState": client_state, "tenantId": TENANT}
    wrong_state = notify(system, [{**good, "clientState": "guess"}])
    unknown = notify(system, [{**good, "subscriptionId": "not-ours"}])
    foreign = notify(system, [{**good, "tenantId": "00000000-0000-0000-0000-000000000000"}])
    malformed = httpx.post(f"{system.web_url}/webhooks/graph", content=b"{not json",
                           headers={"Content-Type": "application/json"})  # fmt: skip
    assert [r.status_code for r in (wrong_state, unknown, foreign)] == [403, 403, 403]
    assert "clientState mismatch" in wrong_state.json()["reason"]
    assert "unknown subscription" in unknown.json()["reason"]
    assert "foreign tenant" in foreign.json()["reason"]
    assert malformed.status_code == 400 and "JSON" in malformed.json()["reason"]
    assert not redis_conn.exists(f"exsync:dirty:mailbox:{uid}")
    assert jobs.queue("exsync", redis_conn).count == 0
    assert client_state not in system.logs()
    handshake = httpx.post(f"{system.web_url}/webhooks/graph?validationToken=a%2Bb%3Cc")
    assert (handshake.status_code, handshake.text) == (200, "a+b<c")
    assert handshake.headers["content-type"].startswith("text/plain")


def test_expired_removed_subscriptions_and_a_stale_delta_token_recover(
    make_system,
    redis_conn: redis.Redis,  # type: ignore[no-untyped-def]
) -> None:
    system = subscribed_system(make_system, EXSYNC_RECONCILE_SECONDS="3")
    outlook = Outlook(system)
    uid = mailbox_id(system, USER1)
    d = day(12)

    # Expired behind our back: the reconciliation notices and subscribes again.
    first, _ = our_subscription(redis_conn, uid)
    with system.graph_http() as http:
        http.post(f"/_emulator/subscriptions/{first}/expire").raise_for_status()
    renewed = lambda: our_subscription(redis_conn, uid)[0] not in ("", first)  # noqa: E731
    wait_until(renewed, 30, what="a new subscription")
    outlook.create(USER1, subject="After expiry", showAs="busy", start=at(d, 9), end=at(d, 10))
    wait_blocks(system, STAFF1, titled("After expiry"), what="the event after re-subscribing")

    # Removed with its lifecycle notification: recreated at once, the mailbox resynced.
    second, _ = our_subscription(redis_conn, uid)
    outlook.create(USER1, subject="In the gap", showAs="busy", start=at(d, 11), end=at(d, 12))
    with system.graph_http() as http:
        http.post(f"/_emulator/subscriptions/{second}/lifecycle",
                  json={"event": "subscriptionRemoved"}).raise_for_status()  # fmt: skip
    wait_until(lambda: our_subscription(redis_conn, uid)[0] not in ("", first, second), 30,
               what="the removed subscription recreated")  # fmt: skip
    wait_blocks(system, STAFF1, titled("In the gap"))

    # A stale delta token: Graph answers 410, a fresh round runs, nothing is doubled.
    with system.graph_http() as http:
        http.post(
            "/_emulator/faults", json={"kind": "expire_delta", "mailbox": uid}
        ).raise_for_status()
        http.delete("/_emulator/faults").raise_for_status()
    outlook.create(USER1, subject="After the resync", showAs="busy", start=at(d, 13), end=at(d, 14))
    blocks = wait_blocks(system, STAFF1, titled("After the resync"))
    ids = [b["external_id"] for b in blocks]
    assert len(ids) == len(set(ids)), "a fresh round doubled nothing"
    assert len(titled("After expiry")(blocks)) == 1 and len(titled("In the gap")(blocks)) == 1
    outlook.http.close()


def test_dropped_duplicated_delayed_and_reordered_notifications_converge(
    make_system,
    redis_conn: redis.Redis,  # type: ignore[no-untyped-def]
) -> None:
    system = subscribed_system(make_system, EXSYNC_SAFETY_NET_SECONDS="8")
    with system.graph_http() as http:
        for fault in ({"kind": "notification_drop", "share": 0.3},
                      {"kind": "notification_duplicate", "share": 0.3},
                      {"kind": "notification_delay", "seconds": 1.5, "share": 0.3},
                      {"kind": "notification_reorder", "batch": 3, "hold_seconds": 2}):  # fmt: skip
            http.post("/_emulator/faults", json=fault).raise_for_status()
    outlook = Outlook(system)
    d = day(14)
    made = [outlook.create(USER1, subject=f"Client call {n}", showAs="busy",
                           start=at(d, 8 + n), end=at(d, 9 + n)) for n in range(6)]  # fmt: skip
    for n, event in enumerate(made[:3]):
        later = d + timedelta(days=1)
        outlook.update(USER1, event, subject=f"Client call {n} (moved)",
                       start=at(later, 8 + n), end=at(later, 9 + n))  # fmt: skip
    outlook.delete(USER1, made[5])

    def converged(blocks: list[dict[str, Any]]) -> bool:
        calls = sorted(b["title"] for b in blocks if b["title"].startswith("Client call"))
        moved = [f"Client call {n} (moved)" for n in range(3)]
        return calls == sorted([*moved, "Client call 3", "Client call 4"])

    wait_blocks(system, STAFF1, converged, timeout=60, what="the same end state")
    counters = system.graph_state()["counters"]["notifications"]
    assert counters.get("dropped", 0) >= 1, counters
    outlook.http.close()


def test_a_block_whose_create_was_never_recorded_goes_with_its_event(
    system: System, outlook: Outlook, redis_conn: redis.Redis
) -> None:
    # Found reading the chaos suite's seed-14 bug on the Coconut side: the worker died after
    # Coconut made the block and before its id was kept, the event was then deleted, and the
    # block stayed: the round that saw the deletion did not know the block existed.
    queue = jobs.queue("exsync", redis_conn)
    wait_until(lambda: not queue.count and not queue.started_job_registry.count, 60,
               what="the initial sync done, so the slow write is ours")  # fmt: skip
    with system.coconut_http() as coconut:
        armed = coconut.post("/_emulator/faults/slow_write", json={"count": 1, "seconds": 30})
        assert armed.status_code < 300, armed.text
    d = day(9)
    event = outlook.create(USER1, subject="Branch audit", start=at(d, 9), end=at(d, 10),
                           showAs="busy")  # fmt: skip
    wait_blocks(system, STAFF1, titled("Branch audit"), what="the block, its answer pending")
    system.kill("worker-0")
    outlook.delete(USER1, event)
    system.start_worker(0)
    wait_blocks(system, STAFF1, lambda blocks: not titled("Branch audit")(blocks), timeout=90,
                what="the block gone with its event")  # fmt: skip
