"""`exsync subscriptions list|create|renew|delete` against the Graph emulator: by hand, what the
scheduler does on its own. A subscription that is not ours is never touched (exit 1), an
unknown staff member is bad usage (exit 2), and Graph's refusal is one line (exit 1)."""

from __future__ import annotations

import subprocess

from tests.cli_support import run
from tests.harness import System
from tests.sync_support import graph_fault, user_id

GRAPH_USERS = ["--users", "3"]


def at_graph(system: System) -> dict[str, str]:
    """Subscription id -> mailbox user id, as Graph holds them."""
    return {s["id"]: s["mailbox"] for s in system.graph_state()["subscriptions"]}


def ok(system: System, *args: str) -> str:
    done = run(system.env, "subscriptions", *args)
    assert done.returncode == 0, done.stderr
    return done.stdout


def refused(system: System, *args: str) -> subprocess.CompletedProcess:
    return run(system.env, "subscriptions", *args)


def test_create_list_renew_and_delete_one_subscription(make_system) -> None:  # type: ignore[no-untyped-def]
    system = make_system(workers=0, graph_args=GRAPH_USERS)
    assert ok(system, "list") == "no subscriptions\n"

    created = ok(system, "create", "user1@contoso.example")
    assert created.startswith("subscribed user1@contoso.example: ")
    sub_id = created.strip().rsplit(" ", 1)[1]
    assert at_graph(system) == {sub_id: user_id(system, "user1@contoso.example")}

    listed = ok(system, "list").strip().split("\t")
    assert listed[:3] == [sub_id, "user1@contoso.example", "live"]
    assert listed[3].startswith("expires in 166.")  # 10,000 minutes

    renewed = ok(system, "renew", sub_id)
    assert renewed.startswith(f"renewed {sub_id}: expires in 166.")

    assert ok(system, "delete", sub_id) == f"deleted {sub_id}\n"
    assert at_graph(system) == {}
    assert ok(system, "list") == "no subscriptions\n"


def test_create_all_subscribes_every_staff_mailbox_and_delete_all_removes_them(make_system) -> None:  # type: ignore[no-untyped-def]
    system = make_system(workers=0, graph_args=GRAPH_USERS)
    reconciled = ok(system, "create", "--all")
    assert "'subscribed': 3" in reconciled, reconciled
    mailboxes = {user_id(system, f"user{n}@contoso.example") for n in (1, 2, 3)}
    assert set(at_graph(system).values()) == mailboxes
    assert ok(system, "renew", "--all").count("renewed ") == 3
    assert ok(system, "delete", "--all").count("deleted ") == 3
    assert at_graph(system) == {}


def test_unknown_ids_exit_1_an_unknown_staff_member_exits_2_and_nothing_is_touched(
    make_system,  # type: ignore[no-untyped-def]
) -> None:
    system = make_system(workers=0, graph_args=GRAPH_USERS)
    sub_id = ok(system, "create", "user1@contoso.example").strip().rsplit(" ", 1)[1]
    for command in ("renew", "delete"):
        done = refused(system, command, "not-a-subscription-of-ours")
        assert done.returncode == 1
        assert done.stderr == "exsync: not a subscription of ours: not-a-subscription-of-ours\n"
    unknown = refused(system, "create", "nobody@contoso.example")
    assert unknown.returncode == 2
    assert "no staff member who takes appointments and has a mailbox is" in unknown.stderr
    assert list(at_graph(system)) == [sub_id]


def test_graphs_refusal_is_one_line_and_exit_1(make_system) -> None:  # type: ignore[no-untyped-def]
    system = make_system(workers=0, graph_args=GRAPH_USERS)
    ok(system, "create", "user1@contoso.example")  # matches user1 to their mailbox
    ok(system, "delete", "--all")
    graph_fault(system, kind="forbidden", mailbox=user_id(system, "user1@contoso.example"))
    done = refused(system, "create", "user1@contoso.example")
    assert done.returncode == 1, done.stdout + done.stderr
    last = done.stderr.strip().splitlines()[-1]  # after the INFO log lines
    assert last.startswith("exsync: Graph refused (403 ErrorAccessDenied: ")
    assert "Traceback" not in done.stderr
