"""The design's import boundaries (pyproject.toml, [tool.importlinter]) hold, and each contract
fails when a module breaks it: a violation is planted in a copy of the packages."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # each check is a lint-imports process over the whole tree

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("core", "webhooks", "workers", "subscriptions", "exsync", "emulators")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")

# contract id -> (module file, the import planted at its end)
VIOLATIONS = {
    "receivers": ("webhooks/graph.py", "import core.coconut.client"),
    "emulators": ("workers/exchange.py", "import emulators.serving"),
    "workers": ("subscriptions/manager.py", "import webhooks.app"),
    "rules": ("workers/projection.py", "import redis"),
    "shared": ("core/settings.py", "import exsync.cli"),
}


def _lint(tree: Path, contract: str | None = None) -> subprocess.CompletedProcess[str]:
    args = [str(LINT_IMPORTS), "--no-cache", *(["--contract", contract] if contract else [])]
    env = {**os.environ, "PYTHONPATH": str(tree)}  # the copy before the installed project
    return subprocess.run(args, cwd=tree, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    copy = tmp_path_factory.mktemp("tree")
    for package in PACKAGES:
        shutil.copytree(
            ROOT / package, copy / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    shutil.copy(ROOT / "pyproject.toml", copy / "pyproject.toml")
    return copy


def test_every_contract_is_kept() -> None:
    result = _lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Contracts: {len(VIOLATIONS)} kept, 0 broken." in result.stdout


@pytest.mark.parametrize("contract", sorted(VIOLATIONS))
def test_a_planted_violation_breaks_its_contract(tree: Path, contract: str) -> None:
    module, planted = VIOLATIONS[contract]
    path = tree / module
    original = path.read_text()
    path.write_text(f"{original}\n{planted}  # planted by the test\n")
    try:
        result = _lint(tree, contract)
    finally:
        path.write_text(original)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "0 kept, 1 broken" in result.stdout
    assert planted.split()[-1].split(".")[0] in result.stdout  # the report names the import
