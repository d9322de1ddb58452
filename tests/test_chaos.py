"""The chaos suite on a few fixed seeds, and proof that its oracle fails when it should.

Each seed starts the whole system on its own AOF Redis, plays a schedule of changes and faults
(tests/chaos/schedule.py), and checks exact convergence (tests/chaos/oracle.py). A failing
seed prints the command that replays it; `bench/chaos.py --seed N --ops M` runs a
larger one.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.chaos import oracle
from tests.chaos.run import run
from tests.chaos.schedule import FAULTS, plan, tally
from tests.chaos.system import QUIET_NETS, ChaosSystem
from tests.chaos.world import World
from tests.harness import wait_until
from tests.sync_support import CoconutAdmin

pytestmark = pytest.mark.slow

SEEDS = [101, 202, 303]


@pytest.mark.parametrize("seed", SEEDS)
def test_a_seeded_schedule_of_changes_and_faults_converges_exactly(
    seed: int, tmp_path: Path
) -> None:
    report = run(seed, 90, tmp_path, timeout=180)
    print(report.render())
    _, faults = tally(report.steps)
    assert sum(faults.values()) >= 10, faults  # the schedule really struck
    assert report.ok, report.render()


def test_a_seed_replays_the_same_schedule_and_a_long_one_holds_every_fault() -> None:
    assert plan(7, 300, 3) == plan(7, 300, 3)
    assert plan(7, 300, 3) != plan(8, 300, 3)
    _, faults = tally(plan(7, 2000, 3))
    assert set(faults) == set(FAULTS)


@pytest.fixture
def settled(tmp_path: Path) -> Iterator[World]:
    """A system that converged on its seed, with its workers stopped: nothing repairs what a
    test breaks, so the oracle alone must notice."""
    system = ChaosSystem(tmp_path, "", workers=1, scheduler=True,
                         graph_args=["--users", "3"], settings=QUIET_NETS)  # fmt: skip
    system.start()
    world = World(system, seed=0)
    try:
        wait_until(lambda: len(system.graph_state()["subscriptions"]) == 3, 60, what="subscribed")
        wait_until(lambda: oracle.check(world).ok, 90, interval=1, what="the seed converged")
        for name in [n for n in system.processes if n.startswith(("worker", "scheduler"))]:
            system.processes[name].stop()
        yield world
    finally:
        world.close()
        system.stop()


def test_the_oracle_names_every_kind_of_divergence(settled: World) -> None:
    system = settled.system
    admin = CoconutAdmin(system)
    blocks = [a for a in system.coconut_state()["absences"] if a["source"] == "external"]
    retitled, removed = blocks[0], blocks[1]
    admin.http.patch(
        f"/api/v2/b2b/absences/{retitled['id']}",
        json={"data": {"type": "absences", "id": str(retitled["id"]),
                       "attributes": {"title": "Edited in Coconut"}}},
    ).raise_for_status()  # fmt: skip
    admin.http.delete(f"/api/v2/b2b/absences/{removed['id']}").raise_for_status()
    secret = "Doctor"  # the seed's private event
    leak = {"user_id": 1, "start": "2030-01-01T10:00:00Z", "end": "2030-01-01T11:00:00Z",
            "source": "external", "external_id": "leaked", "title": secret}  # fmt: skip
    admin.http.post(
        "/api/v2/b2b/absences", json={"data": {"type": "absences", "attributes": leak}}
    ).raise_for_status()
    ours = next(
        (uid, e) for uid, events in system.graph_state()["events"].items() for e in events
        if oracle._mark(e)
    )  # fmt: skip
    with system.graph_http() as graph:
        graph.delete(f"/_emulator/users/{ours[0]}/events/{ours[1]['id']}").raise_for_status()

    found = oracle.check(settled)

    kinds = {problem.split(":")[0] for problem in found.problems}
    assert kinds >= {
        "busy block field",  # the retitled block
        "busy block count",  # the removed one is missing
        "busy block removed without a signal",
        "orphaned busy block",  # the one nobody's event asked for
        "private subject in Coconut",
        "projection count",  # our deleted event
    }, found.problems
