"""Running `exsync` in tests (this module holds no tests).

`invoke` runs a command in this process through click's CliRunner: for the commands that only
read and write Redis, it is quick and shows exit code, stdout and stderr apart. A command sets
up logging for its process, so the test process's logging is put back afterwards. `run` starts
`python -m exsync.cli` with a System's environment: for the commands that call Graph or Coconut
(they build a worker context of their own) and whenever the real process matters.
"""

from __future__ import annotations

import logging
import os
import pty
import select
import subprocess
import sys
import time
from collections.abc import Mapping

from click.testing import CliRunner, Result

from core import jobs
from exsync.cli import main


def invoke(redis_url: str, *args: str, env: Mapping[str, str] | None = None) -> Result:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    policy = jobs.JobPolicy.retries, jobs.JobPolicy.timeout
    try:
        return CliRunner().invoke(
            main, list(args), env={"EXSYNC_REDIS_URL": redis_url, **(env or {})},
            catch_exceptions=False,
        )  # fmt: skip
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        jobs.configure(*policy)


def run(env: Mapping[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "exsync.cli", *args], env=dict(env), capture_output=True,
        text=True, timeout=timeout,
    )  # fmt: skip


def run_in_terminal(env: Mapping[str, str], *args: str, timeout: float = 120) -> tuple[int, str]:
    """Run with stdout on a pseudo-terminal, as an admin's shell would (click draws progress
    bars only there); returns the exit code and everything the terminal showed."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "exsync.cli", *args], env=dict(env), stdout=follower,
        stderr=follower, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    os.close(follower)
    shown = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if not select.select([leader], [], [], 1)[0]:
                continue
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # the terminal closed: the process exited
                break
            if not chunk:
                break
            shown.extend(chunk)
    finally:
        os.close(leader)
        if proc.poll() is None:
            proc.kill()
    return proc.wait(10), shown.decode(errors="replace")
