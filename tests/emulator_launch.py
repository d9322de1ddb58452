"""The one way tests start the Graph and Coconut emulators: their command lines and the line
each prints when it is ready (exsync/demo.py starts them the same way for the demo)."""

from __future__ import annotations

import sys
from pathlib import Path

from exsync.processes import Process

READY = {
    "graph": r"graph emulator ready at (\S+)",
    "coconut": r"coconut emulator ready at (\S+)",
}


def graph_argv(port: int, ca_file: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "emulators.graph", "--port", str(port), "--ca-file",
            str(ca_file), *extra]  # fmt: skip


def coconut_argv(port: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "emulators.coconut", "--port", str(port), *extra]


def launch(argv: list[str], env: dict[str, str], log: Path) -> tuple[Process, str]:
    """Start an emulator and wait until it serves; returns the process and its base URL."""
    kind = argv[2].removeprefix("emulators.")
    process = Process(kind, argv, env, log).start()
    try:
        base = process.wait_for_line(READY[kind]).group(1)
    except BaseException:
        process.stop()
        raise
    return process, base
