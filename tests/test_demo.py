"""`exsync demo` on embedded defaults: starts everything, syncs the seeded data, and stops
every child on Ctrl-C."""

from __future__ import annotations

import os
import shutil
import signal
import ssl
import sys
from pathlib import Path

import httpx
import pytest

from exsync.processes import Process, wait_until
from tests.harness import free_port


def start_demo(tmp_path: Path, path: str) -> tuple[Process, int]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("EXSYNC_")}
    env.pop("REDIS_URL", None)
    env.update(PATH=path, PYTHONUNBUFFERED="1")
    demo = Process(
        "demo",
        [sys.executable, "-m", "exsync.cli", "demo", "--port", str(port)],
        env,
        tmp_path / "demo.log",
    ).start()
    demo.wait_for_line(r"Press Ctrl-C to stop", timeout=90)
    return demo, port


def stop_demo(demo: Process) -> str:
    demo.signal(signal.SIGINT)
    assert demo.popen is not None
    assert demo.popen.wait(60) == 0, demo.log()
    return demo.log()


def projected_events(demo: Process, port: int) -> int:
    """Events in the Graph emulator that carry our mark (seeded appointments, synced)."""
    workdir = Path(demo.wait_for_line(r"logs\s+(\S+)").group(1))
    trust = ssl.create_default_context(cafile=str(workdir / "graph-ca.pem"))
    graph = demo.wait_for_line(r"graph emulator\s+(https://\S+)/v1\.0").group(1)
    state = httpx.get(f"{graph}/_emulator/state", verify=trust, timeout=5).json()
    return sum(
        1
        for events in state["events"].values()
        for event in events
        if any(
            "CoconutExchangeSyncMark" in prop["id"]
            for prop in event.get("singleValueExtendedProperties") or []
        )
    )


def busy_blocks(demo: Process) -> int:
    """External absences in the Coconut emulator: Outlook events synced as busy time."""
    coconut = demo.wait_for_line(r"coconut emulator\s+(http://\S+)/api/v2/b2b").group(1)
    state = httpx.get(f"{coconut}/_emulator/state", timeout=5).json()
    return sum(1 for a in state["absences"] if a["source"] == "external")


def synced_both_ways(demo: Process, port: int) -> bool:
    return projected_events(demo, port) > 0 and busy_blocks(demo) > 0


def test_demo_starts_everything_syncs_the_seed_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    if shutil.which("redis-server") is None:
        pytest.fail("this test runs the demo with a local redis-server; install redis-server")
    demo, port = start_demo(tmp_path, os.environ["PATH"])
    try:
        banner = demo.log()
        for name in ("redis", "graph emulator", "coconut emulator", "web", "worker", "scheduler"):
            assert f"  {name}" in banner
        assert "redis-server on" in banner
        wait_until(lambda: synced_both_ways(demo, port), 90, what="the seed synced both ways")
    finally:
        log = stop_demo(demo)
    assert "stopped everything" in log
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)


def test_demo_falls_back_to_an_embedded_redis(tmp_path: Path) -> None:
    """With no REDIS_URL and no redis-server on PATH, fakeredis' TCP server stands in."""
    python_dir = str(Path(sys.executable).parent)
    demo, port = start_demo(tmp_path, python_dir)
    try:
        assert "embedded fakeredis" in demo.log()
        assert httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code == 200
        wait_until(lambda: synced_both_ways(demo, port), 90, what="the seed synced both ways")
    finally:
        log = stop_demo(demo)
    assert "stopped everything" in log
