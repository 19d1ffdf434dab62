"""The install is reproducible: the lock matches pyproject.toml and the venv matches the lock."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent


def _lock_tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("ci_lock", ROOT / ".ci" / "lock.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("ci_lock", module)
    spec.loader.exec_module(module)
    return module


def test_lock_is_current_with_pyproject() -> None:
    lock = _lock_tool()
    assert lock.recorded_digest() == lock.inputs_digest(), "run `make lock`"


def test_every_locked_package_carries_hashes() -> None:
    lines = (ROOT / "requirements.lock").read_text().splitlines()
    pins = [i for i, line in enumerate(lines) if "==" in line and not line.startswith("#")]
    assert pins
    assert all(lines[i + 1].strip().startswith("--hash=sha256:") for i in pins)


def test_the_environment_is_exactly_the_lock() -> None:
    """What `pip freeze` would show equals what the lock pins (run `make clean install` when a
    package was installed by hand)."""
    assert _lock_tool().freeze_differences() == []
