"""A delta round can never loop (workers.outlook_reads): the worker's own reads, through its
real context (msgraph-sdk, the mailbox gate in Redis), against each of the Graph emulator's
paging faults. A round that misbehaves stops within its bounds with a DeltaFault naming why;
one that pages oddly but ends is read to its end; the calendarView window read lists what a
delta round from scratch lists.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from core.settings import load_settings
from tests.graph_emulator_support import Emulator
from tests.harness import GRAPH_CLIENT_ID, GRAPH_CLIENT_SECRET, TENANT
from workers import outlook_reads
from workers.context import WorkerContext

pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning:msgraph.*"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning:kiota_abstractions.*"),
]

START = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
END = START + timedelta(days=60)


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    emu = Emulator(tmp_path_factory.mktemp("graph")).start()
    yield emu
    emu.stop()


@pytest.fixture
def mailbox(emulator: Emulator) -> str:
    """A mailbox of its own for each test: a daily meeting (40 in the window), a weekly
    series with a moved occurrence, a private visit, an all-day day off, a free hour."""
    emulator.control("DELETE", "/faults")
    uid = emulator.add_user(f"staff-{uuid.uuid4().hex[:12]}@contoso.example")
    day = START + timedelta(days=1)

    def at(moment: datetime) -> dict[str, str]:
        return {"dateTime": moment.strftime("%Y-%m-%dT%H:%M:%S"), "timeZone": "UTC"}

    def make(subject: str, start: datetime, hours: int = 1, **extra: Any) -> dict[str, Any]:
        body = {"subject": subject, "start": at(start), "end": at(start + timedelta(hours=hours)),
                **extra}  # fmt: skip
        answer = emulator.control("POST", f"/users/{uid}/events", body)
        assert answer.status_code == 201, answer.text
        return answer.json()  # type: ignore[no-any-return]

    def recurring(kind: str, first: datetime, count: int) -> dict[str, Any]:
        pattern: dict[str, Any] = {"type": kind, "interval": 1}
        if kind == "weekly":
            pattern["daysOfWeek"] = [first.strftime("%A").lower()]
        return {"pattern": pattern, "range": {"type": "numbered", "numberOfOccurrences": count,
                                              "startDate": first.date().isoformat()}}  # fmt: skip

    make("Daily stand-up", day.replace(hour=9), recurrence=recurring("daily", day, 40))
    weekly = make("Weekly review", day.replace(hour=14), recurrence=recurring("weekly", day, 4))
    make("Doctor", day.replace(hour=11), sensitivity="private", showAs="busy")
    make("Day off", day + timedelta(days=3), hours=24, isAllDay=True, showAs="oof")
    make("Gym", day.replace(hour=7), showAs="free")
    with emulator.http() as http:
        view = http.get(
            f"/_emulator/users/{uid}/calendarView",
            params={"startDateTime": START.isoformat(), "endDateTime": END.isoformat()},
        )
        moved = next(e for e in view.json()["value"] if e.get("seriesMasterId") == weekly["id"])
        later = datetime.fromisoformat(moved["start"]["dateTime"][:19]) + timedelta(hours=2)
        http.patch(
            f"/_emulator/users/{uid}/events/{moved['id']}",
            json={"start": at(later), "end": at(later + timedelta(hours=1))},
        ).raise_for_status()
    return uid


@pytest.fixture
def make_ctx(emulator: Emulator, redis_url: str) -> Iterator[Any]:
    made: list[WorkerContext] = []

    def build(**settings: Any) -> WorkerContext:
        ctx = WorkerContext(load_settings(
            redis_url=redis_url, tenant_id=TENANT, client_id=GRAPH_CLIENT_ID,
            client_secret=GRAPH_CLIENT_SECRET, graph_url=emulator.endpoint.graph_url,
            authority=emulator.base, graph_ca_file=str(emulator.ca_file), **settings,
        ))  # fmt: skip
        made.append(ctx)
        return ctx

    yield build
    for ctx in made:
        if ctx._graph is not None:
            ctx.run(ctx._graph.request_adapter._http_client.aclose())
        ctx.loop.close()


def arm(emulator: Emulator, **spec: Any) -> None:
    answer = emulator.control("POST", "/faults", spec)
    assert answer.status_code == 201, answer.text


def delta_requests(emulator: Emulator) -> int:
    """Delta requests so far (the SDK asks for `delta()`, the links for `delta`)."""
    counted = emulator.state()["counters"]["requests"].items()
    return sum(
        n for route, n in counted if route.startswith("GET /v1.0/users/<user>/calendarView/delta")
    )


def fault_of(ctx: WorkerContext, uid: str) -> outlook_reads.DeltaFault:
    with pytest.raises(outlook_reads.DeltaFault) as fault:
        outlook_reads.read_round(ctx, uid, None, START, END)
    return fault.value


def test_a_plain_round_and_a_window_read_list_the_same_instances(
    emulator: Emulator, mailbox: str, make_ctx: Any
) -> None:
    ctx = make_ctx()
    items, link = outlook_reads.read_round(ctx, mailbox, None, START, END)
    window = outlook_reads.read_window(ctx, mailbox, START, END)
    assert link and len(items) == len(window) == 40 + 4 + 3
    by_delta = {i.event_id: i for i in items}
    assert set(by_delta) == {i.event_id for i in window}
    for seen in window:
        listed = by_delta[seen.event_id]
        if listed.type == "occurrence":  # delta is stingy there; the planner reads the master
            same = ("type", "series_master_id", "start", "end", "etag", "removed")
            assert {k: getattr(seen, k) for k in same} == {k: getattr(listed, k) for k in same}
        else:
            assert seen == listed
    assert {i.type for i in window} == {"occurrence", "exception", "singleInstance"}


def test_oversize_pages_and_a_few_empty_pages_are_read_to_the_end(
    emulator: Emulator, mailbox: str, make_ctx: Any
) -> None:
    arm(emulator, kind="delta_oversize", mailbox=mailbox)
    arm(emulator, kind="delta_empty_pages", mailbox=mailbox, pages=3)
    ctx = make_ctx(delta_stall_pages=4)
    items, link = outlook_reads.read_round(ctx, mailbox, None, START, END)
    assert link and len({i.event_id for i in items}) == 47


def test_a_repeated_next_link_is_a_fault_at_once(
    emulator: Emulator, mailbox: str, make_ctx: Any
) -> None:
    arm(emulator, kind="delta_repeat_link", mailbox=mailbox)
    before = delta_requests(emulator)
    fault = fault_of(make_ctx(), mailbox)
    assert fault.kind == "repeated_link"
    assert delta_requests(emulator) - before == 2


@pytest.mark.parametrize(
    "spec", [{"kind": "delta_changing_links"}, {"kind": "delta_empty_pages", "pages": 100_000}],
    ids=["changing-links", "endless-empty-pages"],
)  # fmt: skip
def test_pages_that_bring_nothing_new_stop_the_round(
    emulator: Emulator, mailbox: str, make_ctx: Any, spec: dict[str, Any]
) -> None:
    arm(emulator, **spec, mailbox=mailbox)
    before = delta_requests(emulator)
    fault = fault_of(make_ctx(delta_stall_pages=5), mailbox)
    assert fault.kind == "no_progress", fault
    # The pages with items (at most one of 100 for 47 items), then 5 that bring nothing new.
    assert delta_requests(emulator) - before <= 1 + 5


def test_the_page_item_and_time_bounds(emulator: Emulator, mailbox: str, make_ctx: Any) -> None:
    arm(emulator, kind="delta_changing_links", mailbox=mailbox)
    assert fault_of(make_ctx(delta_page_limit=3), mailbox).kind == "pages"
    emulator.control("DELETE", "/faults")
    assert fault_of(make_ctx(delta_item_limit=20), mailbox).kind == "items"
    arm(emulator, kind="delta_unavailable", status=504, mailbox=mailbox)
    began = time.monotonic()
    fault = fault_of(make_ctx(delta_round_seconds=2), mailbox)
    assert fault.kind == "time" and time.monotonic() - began < 4, fault
    assert "2 s" in str(fault)
    # The round's time is at most a third of the job's: the window read must still fit.
    assert outlook_reads.round_seconds(make_ctx(job_timeout=30)) == 10


def test_a_503_that_outlasts_the_gates_retries_is_a_fault(
    emulator: Emulator, mailbox: str, make_ctx: Any
) -> None:
    arm(emulator, kind="delta_unavailable", mailbox=mailbox, retry_after=0)
    fault = fault_of(make_ctx(), mailbox)
    assert fault.kind == "unavailable" and "503" in str(fault)
    window = outlook_reads.read_window(make_ctx(), mailbox, START, END)
    assert len(window) == 47, "calendarView still answers"
