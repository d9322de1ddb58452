"""`exsync admin`: the refusals test_admin_auth does not cover; a duplicate token name and a
malformed email are bad usage (2), removing an account that does not exist is a problem (1)."""

from __future__ import annotations

from tests.cli_support import invoke


def test_a_second_token_with_the_same_name_is_refused_with_exit_2(redis_url: str) -> None:
    first = invoke(redis_url, "admin", "add-token", "deploy")
    assert first.exit_code == 0 and first.stdout.startswith("exsa_")
    second = invoke(redis_url, "admin", "add-token", "deploy")
    assert second.exit_code == 2
    assert "a token named 'deploy' exists; revoke it first" in second.stderr
    assert first.stdout.strip() not in second.output


def test_removing_an_account_that_does_not_exist_exits_1(redis_url: str) -> None:
    done = invoke(redis_url, "admin", "remove-user", "nobody@bank.example")
    assert done.exit_code == 1
    assert done.stderr == "exsync: no account nobody@bank.example\n"


def test_a_malformed_email_is_bad_usage(redis_url: str) -> None:
    done = invoke(redis_url, "admin", "add-user", "not-an-email",
                  env={"EXSYNC_ADMIN_PASSWORD": "long-enough-password"})  # fmt: skip
    assert done.exit_code == 2
    assert "not an email address: 'not-an-email'" in done.stderr


def test_an_email_longer_than_smtp_allows_is_bad_usage(redis_url: str) -> None:
    done = invoke(redis_url, "admin", "add-user", "a" * 250 + "@bank.example",
                  env={"EXSYNC_ADMIN_PASSWORD": "long-enough-password"})  # fmt: skip
    assert done.exit_code == 2
    assert "an email address has at most 254 characters" in done.stderr
    assert "a" * 250 not in done.stderr
