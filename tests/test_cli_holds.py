"""`exsync holds list|release|discard`: busy-block removals held for review are listed per
mailbox, discarded (the blocks stay) or released (the blocks go from Coconut); naming a mailbox
with nothing held is a problem (exit 1)."""

from __future__ import annotations

import json

import redis

from core import store
from tests.cli_support import invoke, run
from tests.harness import wait_until
from tests.sync_support import busy_blocks, user_id


def hold(conn: redis.Redis, mailbox: str, *event_ids: str) -> None:
    conn.sadd(store.held_key(mailbox), *event_ids)
    conn.hset(store.mailbox_key(mailbox), mapping={"held_removals": len(event_ids)})


def test_holds_list_names_each_mailbox_and_how_many(
    redis_url: str, redis_conn: redis.Redis
) -> None:
    assert invoke(redis_url, "holds", "list").stdout == "no removals held\n"
    hold(redis_conn, "u-1", "e-1", "e-2", "e-3")
    redis_conn.hset(store.mailbox_key("u-1"), "address", "ann@bank.example")
    done = invoke(redis_url, "holds", "list")
    assert done.exit_code == 0
    assert done.stdout == "u-1\tann@bank.example\t3 removal(s) held\n"


def test_holds_discard_forgets_them_and_again_exits_1(
    redis_url: str, redis_conn: redis.Redis
) -> None:
    hold(redis_conn, "u-1", "e-1", "e-2")
    done = invoke(redis_url, "holds", "discard", "u-1")
    assert done.exit_code == 0
    assert done.stdout == "discarded 2 held removal(s); the busy blocks stay\n"
    assert not redis_conn.exists(store.held_key("u-1"))
    assert not redis_conn.hexists(store.mailbox_key("u-1"), "held_removals")
    again = invoke(redis_url, "holds", "discard", "u-1")
    assert again.exit_code == 1
    assert "no removals are held for u-1" in again.stderr


def test_holds_release_removes_the_held_busy_blocks_from_coconut(  # type: ignore[no-untyped-def]
    make_system, redis_conn: redis.Redis
) -> None:
    system = make_system(graph_args=["--users", "3"])
    assert run(system.env, "initial-sync").returncode == 0
    mailbox = user_id(system, "user1@contoso.example")

    def made() -> list[tuple[str, dict]]:
        # A block is recorded (absence_id 0) before Coconut makes it: wait for a made one.
        blocks = redis_conn.hgetall(store.block_key(mailbox)).items()
        return [(e.decode(), b) for e, raw in blocks if (b := json.loads(raw))["absence_id"]]

    held_event, absence = wait_until(made, 60, what="user1's busy blocks")[0]
    staff_id = int(redis_conn.hget(store.mailbox_key(mailbox), "staff_id") or 0)
    assert absence["absence_id"] in {a["id"] for a in busy_blocks(system, staff_id)}
    hold(redis_conn, mailbox, held_event)

    done = run(system.env, "holds", "release", mailbox)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "released: 1 busy block(s) removed\n"
    assert absence["absence_id"] not in {a["id"] for a in busy_blocks(system, staff_id)}
    assert not redis_conn.hexists(store.block_key(mailbox), held_event)
    assert run(system.env, "holds", "release", mailbox).returncode == 1, "nothing held any more"
