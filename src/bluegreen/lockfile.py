"""The part of a hashed lock (``requirements.lock``, as ``uv export`` writes it) that a
release needs at run time.

The lock pins the development tools too (pytest, mypy, playwright...): a release
environment gets only the closure of ``[project] dependencies``, found through the lock's
``# via`` annotations, each entry with its hashes, so ``pip install --require-hashes``
still installs exactly the locked files (and fails loudly should the closure miss one).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_VIA = re.compile(r"#\s+(?:via\s+)?(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)")


def canonical(name: str) -> str:
    """A distribution name as PyPI compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    """``"uvicorn[standard]>=0.30"`` -> ``"uvicorn"``."""
    match = _NAME.match(requirement.strip())
    return canonical(match.group(0)) if match else ""


def _entries(text: str) -> list[tuple[str, list[str], set[str]]]:
    """``(name, lines, via)`` per pinned entry, in file order."""
    entries: list[tuple[str, list[str], set[str]]] = []
    for line in text.splitlines():
        if line and not line[0].isspace() and not line.startswith("#"):
            entries.append((requirement_name(line), [line], set()))
        elif entries and line.strip():
            entries[-1][1].append(line)
            via = _VIA.match(line.strip())
            if via is not None and line.strip() != "# via":
                entries[-1][2].add(canonical(via.group("name")))
    return entries


def runtime_lock(text: str, roots: Iterable[str]) -> str:
    """The entries of lock ``text`` that the requirements ``roots`` need, transitively.

    Without roots or ``# via`` annotations the whole lock is needed: it is returned as is.
    """
    needed = {requirement_name(r) for r in roots} - {""}
    entries = _entries(text)
    if not needed or not any(via for _, _, via in entries):
        return text
    grew = True
    while grew:
        grew = False
        for name, _, via in entries:
            if name not in needed and via & needed:
                needed.add(name)
                grew = True
    kept = [line for name, lines, _ in entries if name in needed for line in lines]
    return "\n".join(kept) + "\n"
