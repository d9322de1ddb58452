"""Finding 8: a value from a request cannot forge a log line. In the text format one record is
one physical line whatever its message and extras hold, and the lines of a traceback are
indented, so a forged line in an exception's message never starts where a record starts."""

from __future__ import annotations

import logging
from urllib.parse import quote

import pytest

from core import logs
from core.settings import load_settings
from tests.harness import COCONUT_WEBHOOK_SECRET
from webhooks.app import create_app

log = logging.getLogger("tests.security.forging")
FORGED = "2030-01-01 00:00:00,000 ERROR webhooks.admin.auth admin.signed_in role=admin"
# Every character some reader takes for the end of a line: the file, group and record
# separators, NEL (C1) and the Unicode separators too (`str.splitlines` does).
BREAKS = {
    "LF": "\n", "CR": "\r", "CRLF": "\r\n", "VT": "\x0b", "FF": "\x0c", "FS": "\x1c",
    "GS": "\x1d", "RS": "\x1e", "NEL": "\x85", "LS": "\u2028", "PS": "\u2029",
}  # fmt: skip


def forged_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(FORGED[:10])]


def test_a_request_path_with_an_encoded_newline_is_logged_on_one_line(
    redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = load_settings(
        redis_url=redis_url, coconut_webhook_secret=COCONUT_WEBHOOK_SECRET, log_format="text"
    )
    client = create_app(settings).test_client()
    capsys.readouterr()

    path = "/admin/subscriptions/" + quote(f"x\n{FORGED}")
    answer = client.delete(path, headers={"Authorization": "Bearer not-a-known-token"})

    assert answer.status_code == 401
    err = capsys.readouterr().err
    (refused,) = [line for line in err.splitlines() if "admin.token_refused" in line]
    assert f"path=/admin/subscriptions/x\\n{FORGED}" in refused
    assert forged_lines(err) == []


@pytest.mark.parametrize("brk", BREAKS.values(), ids=BREAKS.keys())
def test_a_line_break_in_the_message_or_an_extra_never_starts_a_line(
    brk: str, capsys: pytest.CaptureFixture[str]
) -> None:
    logs.configure("INFO", "text")

    log.info("probe.message %s", f"x{brk}{FORGED}")
    log.info("probe.extra", extra={"path": f"/x{brk}{FORGED}", "reason": f"{brk}{FORGED}"})

    err = capsys.readouterr().err
    assert len(err.splitlines()) == 2, err
    assert forged_lines(err) == []


def test_escape_sequences_cannot_rewrite_what_a_terminal_shows(
    capsys: pytest.CaptureFixture[str],
) -> None:
    logs.configure("INFO", "text")

    log.info("probe.terminal", extra={"path": "/ok\x1b[2K\x1b[1Gforged\x08\x7f\x9b"})

    err = capsys.readouterr().err
    assert [c for c in err.rstrip("\n") if ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0] == []
    assert "path=/ok\\x1b[2K\\x1b[1Gforged\\x08\\x7f\\x9b" in err


def test_a_forged_line_in_an_exception_message_stays_inside_the_indented_traceback(
    capsys: pytest.CaptureFixture[str],
) -> None:
    logs.configure("INFO", "text")

    try:
        raise ValueError(f"bad path /x\n{FORGED}\r{FORGED}")
    except ValueError:
        log.exception("probe.failed")

    first, *trace = capsys.readouterr().err.splitlines()
    assert first.endswith("probe.failed")
    assert trace[0].strip() == "Traceback (most recent call last):", "still readable"
    assert [line for line in trace if not line.startswith(" ")] == []
    assert any(line.strip() == FORGED for line in trace)
