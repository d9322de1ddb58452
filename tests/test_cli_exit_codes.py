"""`exsync` reads well and keeps its exit codes: every command has a one-line help; bad usage and
bad configuration exit 2; Redis unreachable exits 3 from every command that needs it, with one
line that names where (never the Redis password) instead of a traceback."""

from __future__ import annotations

import os

import click
import pytest
import redis

from core import connection
from exsync.cli import main
from tests.cli_support import invoke, run
from tests.harness import TENANT
from tests.test_admin_support import connect, save_connection

UNREACHABLE = "redis://:hunter2-redis-password@127.0.0.1:1/0"
# The worker settings the Graph chores insist on, pointing nowhere: Redis is asked first.
GRAPH_CHORES = {
    "EXSYNC_TENANT_ID": TENANT, "EXSYNC_CLIENT_ID": "app", "EXSYNC_CLIENT_SECRET": "secret",
    "EXSYNC_COCONUT_URL": "http://127.0.0.1:1/api/v2/b2b",
    "EXSYNC_GRAPH_URL": "https://127.0.0.1:1/v1.0", "EXSYNC_AUTHORITY": "https://127.0.0.1:1",
}  # fmt: skip


def _commands(group: click.Group, prefix: str = "") -> dict[str, click.Command]:
    found: dict[str, click.Command] = {}
    for name, command in group.commands.items():
        found[prefix + name] = command
        if isinstance(command, click.Group):
            found.update(_commands(command, f"{prefix}{name} "))
    return found


def test_every_command_has_a_one_line_help_that_is_not_cut_short() -> None:
    ctx = click.Context(main)
    for name, command in _commands(main).items():
        short = command.get_short_help_str(limit=60)
        assert short and not short.endswith("..."), f"exsync {name}: {short!r}"
    listing = main.get_help(ctx)
    for name in main.commands:
        assert f"  {name} " in listing


@pytest.mark.parametrize(
    "args",
    [
        ["no-such-command"],
        ["status", "--no-such-option"],
        ["resync"],
        ["resync", "user1@contoso.example", "--all"],
        ["failed", "requeue"],
        ["failed", "requeue", "job-1", "--all"],
        ["holds", "discard"],
        ["admin", "add-token", "no spaces allowed"],
    ],
    ids=lambda args: " ".join(args),
)
def test_bad_usage_exits_2(redis_url: str, args: list[str]) -> None:
    done = invoke(redis_url, *args)
    assert done.exit_code == 2, done.output
    assert "Traceback" not in done.output


@pytest.mark.parametrize(
    "args",
    [["subscriptions", "create"], ["subscriptions", "renew"], ["subscriptions", "delete"]],
    ids=lambda args: " ".join(args),
)
def test_graph_chores_without_a_target_exit_2(redis_url: str, args: list[str]) -> None:
    done = run({**os.environ, "EXSYNC_REDIS_URL": redis_url, **GRAPH_CHORES}, *args)
    assert done.returncode == 2, done.stderr
    assert "--all" in done.stderr


def test_a_bad_setting_exits_2_naming_the_variable(redis_url: str) -> None:
    done = invoke(redis_url, "status", env={"EXSYNC_JOB_RETRIES": "many"})
    assert done.exit_code == 2
    assert "EXSYNC_JOB_RETRIES" in done.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["status"], ["status", "--json"], ["initial-sync"], ["initial-sync", "--status"],
        ["resync", "--all"], ["resync", "user1@contoso.example", "--no-wait"],
        ["failed", "list"], ["failed", "requeue", "--all"],
        ["admin", "add-user", "new@bank.example"], ["admin", "add-token", "nightly"],
        ["admin", "remove-user", "new@bank.example"], ["admin", "revoke-token", "nightly"],
        ["holds", "list"], ["holds", "discard", "user-1"],
    ],
    ids=lambda args: " ".join(args),
)  # fmt: skip
def test_redis_unreachable_exits_3_with_one_line_and_no_password(args: list[str]) -> None:
    done = invoke(UNREACHABLE, *args, env={"EXSYNC_ADMIN_PASSWORD": "long-enough-password"})
    assert done.exit_code == 3, done.output
    assert done.stderr.startswith("exsync: Redis unreachable at redis://:***@127.0.0.1:1/0")
    assert len(done.stderr.strip().splitlines()) == 1
    assert "hunter2" not in done.output


@pytest.mark.parametrize(
    "args",
    [
        ["subscriptions", "list"], ["subscriptions", "create", "--all"],
        ["subscriptions", "renew", "--all"], ["subscriptions", "delete", "--all"],
        ["holds", "release", "user-1"],
    ],
    ids=lambda args: " ".join(args),
)  # fmt: skip
def test_graph_chores_with_redis_unreachable_exit_3_before_calling_anyone(args: list[str]) -> None:
    env = {**os.environ, "EXSYNC_REDIS_URL": UNREACHABLE, **GRAPH_CHORES}
    done = run(env, *args, timeout=60)
    assert done.returncode == 3, done.stderr
    assert done.stderr.startswith("exsync: Redis unreachable at redis://:***@127.0.0.1:1/0")
    assert "hunter2" not in done.stderr + done.stdout


def test_exsync_runs_as_a_module_with_every_command() -> None:
    done = run(os.environ, "--help")
    assert done.returncode == 0
    assert done.stdout.startswith("Usage: exsync ")
    for name in ("resync", "subscriptions", "holds", "status", "failed", "admin"):
        assert f"  {name} " in done.stdout


@pytest.mark.parametrize(
    ("after", "code"),
    [
        ("connected", 0),
        ("saved, never authorized", 1),
        ("disconnecting", 1),
        ("disconnected", 1),
        ("reauthorize", 1),
    ],
)
def test_status_exits_1_when_the_connection_does_not_sync(
    redis_url: str, redis_conn: redis.Redis, after: str, code: int
) -> None:
    """Nothing syncing is a problem the command found (1), not bad usage or configuration (2)."""
    if after == "saved, never authorized":
        save_connection(redis_conn)
    else:
        connect(redis_conn)
    if after == "disconnecting":
        connection.mark_disconnecting(redis_conn)
    elif after == "disconnected":
        connection.mark_disconnecting(redis_conn)
        connection.mark_disconnected(redis_conn)
    elif after == "reauthorize":
        connection.mark_reauthorize(redis_conn)
    done = invoke(redis_url, "status")
    assert done.exit_code == code, done.output
