"""Child processes for `exsync demo` and the end-to-end tests: start, wait until ready, stop.

Each child runs in its own session so a stop reaches everything it started (gunicorn's
workers too), and writes to a log file that is read to tell when it is ready.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def wait_until(
    probe: Callable[[], T], timeout: float = 20.0, interval: float = 0.1, what: str = "condition"
) -> T:
    """Poll until `probe()` returns something truthy; raise TimeoutError naming `what`."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}; last value: {last!r}")


class ProcessExited(RuntimeError):
    """A child ended while we waited for it to become ready; the message holds its log."""


@dataclass
class Process:
    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    popen: subprocess.Popen[bytes] | None = None

    def start(self) -> Process:
        with self.log_path.open("ab") as log:
            self.popen = subprocess.Popen(
                self.argv, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        return self

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_for_line(self, pattern: str, timeout: float = 30.0) -> re.Match[str]:
        def probe() -> re.Match[str] | None:
            if not self.running:
                raise ProcessExited(f"{self.name} exited early:\n{self.log()[-4000:]}")
            return re.search(pattern, self.log())

        return wait_until(probe, timeout, what=f"{self.name} to print {pattern!r}")

    def signal(self, sig: int) -> None:
        if self.running:
            assert self.popen is not None
            os.killpg(self.popen.pid, sig)

    def stop(self, grace: float = 10.0) -> None:
        if not self.running:
            return
        assert self.popen is not None
        self.signal(signal.SIGTERM)
        try:
            self.popen.wait(grace)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            self.popen.wait(5)
