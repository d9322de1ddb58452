"""The job registry: every job the service queues is named in core.job_kinds, and resolves."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

from core import jobs
from core.job_kinds import PROJECTION_JOBS, JobKind

ROOT = Path(__file__).resolve().parent.parent
PRODUCTION = ("core", "webhooks", "workers", "subscriptions", "exsync")


@pytest.mark.parametrize("job", list(JobKind), ids=lambda job: job.name)
def test_every_registered_path_imports_a_function(job: JobKind) -> None:
    module, _, name = job.path.rpartition(".")
    assert callable(getattr(importlib.import_module(module), name))


def test_paths_are_unique_and_found_by_path() -> None:
    assert len({job.path for job in JobKind}) == len(JobKind)
    assert all(JobKind.of_path(job.path) is job for job in JobKind)
    assert JobKind.of_path("workers.nowhere.nothing") is None


def test_the_protocol_s_kinds_are_registered_kinds() -> None:
    kinds = {job.kind for job in JobKind}
    assert set(jobs.LAG_DIRECTIONS) <= kinds
    assert kinds >= jobs.VERSIONED_KINDS
    assert {job.kind for job in PROJECTION_JOBS.values()} == set(PROJECTION_JOBS)


def _queue_calls() -> list[tuple[str, int, ast.expr]]:
    """(file, line, the job argument) of every ensure_queued and run_coalesced call."""
    found = []
    for package in PRODUCTION:
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
                    continue
                if node.func.attr in ("ensure_queued", "run_coalesced") and len(node.args) > 1:
                    found.append((str(path.relative_to(ROOT)), node.lineno, node.args[1]))
    return found


def test_production_code_queues_only_registered_jobs() -> None:
    """No dotted path or kind string at a call site: the job is a JobKind member, a lookup in
    PROJECTION_JOBS, or a name that holds one (a parameter or a Target's `job`)."""
    calls = _queue_calls()
    assert len(calls) > 20  # the scan sees the call sites it is meant to check
    strings = [(f, line) for f, line, arg in calls if isinstance(arg, ast.Constant)]
    assert strings == []
    members = [arg for _, _, arg in calls if isinstance(arg, ast.Attribute)]
    named = {
        arg.attr for arg in members if isinstance(arg.value, ast.Name) and arg.value.id == "JobKind"
    }
    assert named <= {job.name for job in JobKind}
