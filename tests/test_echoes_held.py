"""Whether a notification announces a state we already hold (webhooks.echoes), on a real Redis.

The records are written the way the workers write them: an event we projected through
workers.projection_index.ProjectionIndex (`exsync:projected:{mailbox}`, event id -> a
core.sync_records.Projection with the changeKey we wrote), a busy block as workers.busy_blocks
records it (`exsync:block:{mailbox}`, event id -> core.sync_records.dump of a Block with the
changeKey it was made from). Nothing here reads a record by field name.

Redis database 8 (EXSYNC_ECHOES_TEST_REDIS_URL to move it). Every test writes under mailbox ids
of its own and deletes only those keys, so runs side by side (mutmut's workers, pytest-xdist)
never see each other's data. A missing Redis fails the tests: they never skip.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator

import pytest
import redis

from core import store
from core.sync_records import Block, Projection, dump
from webhooks.echoes import announced, held
from workers.projection_index import ProjectionIndex

REDIS_URL = os.environ.get("EXSYNC_ECHOES_TEST_REDIS_URL", "redis://127.0.0.1:6379/8")


class Mailboxes:
    """Mailbox and item ids unique to one test, and the keys written under them."""

    def __init__(self, conn: redis.Redis) -> None:
        self.conn = conn
        self.token = uuid.uuid4().hex[:12]

    def mailbox(self, name: str) -> str:
        return f"{name}-{self.token}"

    def project(self, mailbox: str, event_id: str, change_key: str, item_id: str = "42") -> None:
        """What workers.projection_writes records after writing an event."""
        projection = Projection(
            "appointment", f"{item_id}-{self.token}", mailbox, event_id, change_key, 1, "d" * 32
        )
        ProjectionIndex(self.conn).save(projection)

    def block(self, mailbox: str, event_id: str, version: str, absence_id: int = 901) -> None:
        """What workers.busy_blocks records after Coconut made the busy block."""
        record = Block(absence_id, "", "e" * 32, version)
        self.conn.hset(store.block_key(mailbox), event_id, dump(record))

    def clean(self) -> None:
        for key in self.conn.scan_iter(match=f"*{self.token}*", count=1000):
            self.conn.delete(key)


@pytest.fixture
def conn() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.ConnectionError as exc:
        pytest.fail(f"Redis is required at {REDIS_URL}: {exc}")
    yield client
    client.close()


@pytest.fixture
def mb(conn: redis.Redis) -> Iterator[Mailboxes]:
    mailboxes = Mailboxes(conn)
    yield mailboxes
    mailboxes.clean()
    assert not list(conn.scan_iter(match=f"*{mailboxes.token}*")), "a key was left behind"


def notification(event_id: str, change_key: str, change: str = "updated") -> dict:
    return {
        "changeType": change,
        "resource": f"Users/x/Events/{event_id}",
        "resourceData": {
            "@odata.type": "#Microsoft.Graph.Event",
            "id": event_id,
            "@odata.etag": f'W/"{change_key}"',
        },
    }


# ------------------------------------------------------------------ announced()


def test_the_change_key_is_the_weak_etags_inside() -> None:
    assert announced(notification("AAMk=", "DwAAABYAAAA")) == ("AAMk=", "DwAAABYAAAA")
    assert announced(notification("AAMk=", "a")) == ("AAMk=", "a"), "one character is enough"
    assert announced(notification("AAMk=", 'in"side')) == ("AAMk=", 'in"side')
    assert announced(notification("AAMk=", "ck", "created")) == ("AAMk=", "ck")


@pytest.mark.parametrize(
    "etag",
    [
        'w/"DwAAABYAAAA"',  # the weak indicator is case-sensitive
        '"DwAAABYAAAA"',  # a strong etag: not what Graph sends for events
        'W/"DwAAABYAAAA',
        'W/DwAAABYAAAA"',
        'W/"',
        'W/""',
        "",
    ],
)
def test_anything_but_a_weak_etag_names_no_state(etag: str) -> None:
    item = notification("AAMk=", "x")
    item["resourceData"]["@odata.etag"] = etag
    assert announced(item) is None


@pytest.mark.parametrize("change", ["deleted", "Updated", "CREATED", "missed", None])
def test_only_created_and_updated_name_a_state(change: str | None) -> None:
    item = notification("AAMk=", "DwAAABYAAAA")
    item["changeType"] = change
    assert announced(item) is None


def test_a_notification_without_an_id_or_etag_names_no_state() -> None:
    for field in ("id", "@odata.etag"):
        item = notification("AAMk=", "DwAAABYAAAA")
        del item["resourceData"][field]
        assert announced(item) is None, field
    item = notification("AAMk=", "DwAAABYAAAA")
    item["resourceData"]["@odata.etag"] = ['W/"DwAAABYAAAA"']
    assert announced(item) is None


# ------------------------------------------------------------------ held()


def test_an_event_we_projected_is_held_at_the_change_key_we_wrote(
    conn: redis.Redis, mb: Mailboxes
) -> None:
    alice = mb.mailbox("alice")
    mb.project(alice, "AAMk-1", "ck-wrote")
    assert held(conn, [(alice, "AAMk-1", "ck-wrote")]) == [True]
    assert held(conn, [(alice, "AAMk-1", "ck-later")]) == [False], "edited in Outlook since"
    assert held(conn, [(alice, "AAMk-2", "ck-wrote")]) == [False], "another event"
    assert held(conn, [(mb.mailbox("bob"), "AAMk-1", "ck-wrote")]) == [False], "another mailbox"


def test_an_event_a_busy_block_was_made_from_is_held_at_that_version(
    conn: redis.Redis, mb: Mailboxes
) -> None:
    alice = mb.mailbox("alice")
    mb.block(alice, "AAMk-7", "ck-made")
    assert held(conn, [(alice, "AAMk-7", "ck-made")]) == [True]
    assert held(conn, [(alice, "AAMk-7", "ck-moved")]) == [False]
    assert held(conn, [(alice, "AAMk-8", "ck-made")]) == [False]
    assert held(conn, [(mb.mailbox("bob"), "AAMk-7", "ck-made")]) == [False]


def test_a_pending_block_holds_no_state(conn: redis.Redis, mb: Mailboxes) -> None:
    alice = mb.mailbox("alice")
    mb.block(alice, "AAMk-7", "", absence_id=0)  # recorded before Coconut answered
    assert held(conn, [(alice, "AAMk-7", "ck-made")]) == [False]


def test_either_record_holding_the_state_is_enough(conn: redis.Redis, mb: Mailboxes) -> None:
    alice = mb.mailbox("alice")
    mb.project(alice, "E1", "ck-1")
    mb.block(alice, "E1", "ck-0")  # both on one event: each holds its own changeKey
    assert held(conn, [(alice, "E1", "ck-1"), (alice, "E1", "ck-0"), (alice, "E1", "ck-2")]) == [
        True,
        True,
        False,
    ]


def test_many_states_are_answered_in_order(conn: redis.Redis, mb: Mailboxes) -> None:
    alice, bob = mb.mailbox("alice"), mb.mailbox("bob")
    mb.project(alice, "E1", "ck-1")
    mb.block(alice, "E2", "ck-2")
    mb.project(bob, "E3", "ck-3", item_id="43")
    mb.block(bob, "E4", "ck-4")
    wanted = [
        (alice, "E1", "ck-1"),  # projected
        (alice, "E2", "ck-2"),  # a block
        (alice, "E3", "ck-3"),  # bob's
        (bob, "E3", "ck-3"),  # projected
        (bob, "E4", "ck-x"),  # a block at another changeKey
        (bob, "E4", "ck-4"),  # a block
        (alice, "E9", "ck-9"),  # nothing
        (alice, "E1", "ck-2"),  # projected at another changeKey
    ]
    assert held(conn, wanted) == [True, True, False, True, False, True, False, False]
    backwards = [False, False, True, False, True, False, True, True]
    assert held(conn, list(reversed(wanted))) == backwards
    assert held(conn, []) == []


def test_the_callers_own_commands_ride_along_and_are_not_answers(
    conn: redis.Redis, mb: Mailboxes
) -> None:
    alice = mb.mailbox("alice")
    mb.project(alice, "E1", "ck-1")
    mb.block(alice, "E2", "ck-2")
    marker = f"test:echoes:{mb.token}"

    def also(pipe: redis.client.Pipeline) -> None:
        pipe.set(marker, "ran")
        pipe.hget(store.projected_key(alice), "E1")  # an answer that would look like news
        pipe.incr(marker + ":n")

    wanted = [(alice, "E9", "ck-9"), (alice, "E1", "ck-1"), (alice, "E2", "ck-2")]
    assert held(conn, wanted, also) == [False, True, True]
    assert conn.get(marker) == b"ran" and conn.get(marker + ":n") == b"1"
    assert held(conn, wanted, None) == [False, True, True]
    assert conn.get(marker + ":n") == b"1", "None adds nothing"


def test_an_unreadable_record_holds_no_state(conn: redis.Redis, mb: Mailboxes) -> None:
    alice = mb.mailbox("alice")
    projected = store.projected_key(alice)
    conn.hset(projected, "E1", b"{not json")
    conn.hset(projected, "E2", json.dumps("ck-2"))  # json, but not a record
    conn.hset(projected, "E3", json.dumps(["ck-3"]))
    conn.hset(projected, "E4", b"\xff\xfe")
    mb.block(alice, "E1", "ck-0")  # the block says otherwise: still not this state
    wanted = [(alice, "E1", "ck-1"), (alice, "E2", "ck-2"), (alice, "E3", "ck-3"),
              (alice, "E4", "ck-4")]  # fmt: skip
    assert held(conn, wanted) == [False, False, False, False]
    mb.block(alice, "E1", "ck-1")
    assert held(conn, wanted) == [True, False, False, False], "the block holds it"


def test_an_echo_of_what_we_wrote_is_recognised_end_to_end(
    conn: redis.Redis, mb: Mailboxes
) -> None:
    """What the Graph receiver does with a batch: announced() each, one held() for the lot."""
    alice = mb.mailbox("alice")
    mb.project(alice, "AAMkAGI2-projected", "DwAAABYAAAAq")
    mb.block(alice, "AAMkAGI2-outlook", "DwAAABYAAAAr")
    batch = [
        notification("AAMkAGI2-projected", "DwAAABYAAAAq"),  # our own write's echo
        notification("AAMkAGI2-outlook", "DwAAABYAAAAr", "created"),  # a block is made of it
        notification("AAMkAGI2-outlook", "DwAAABYAAAAs"),  # edited again: news
        notification("AAMkAGI2-projected", "DwAAABYAAAAq", "deleted"),  # always news
    ]
    named = [announced(item) for item in batch]
    assert named[3] is None
    wanted = [(alice, *n) for n in named if n is not None]
    assert held(conn, wanted) == [True, True, False]
