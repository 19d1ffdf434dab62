"""What a deploy needs to know about this release's migrations: the ``clinic db plan`` JSON
that ``bluegreen`` lints before any migration runs (see ``bluegreen.migrations``).

A migration module may declare, beside ``revision`` and ``down_revision``::

    phase = "expand"          # the default; "contract" for changes the previous release
                              # cannot live with (drops, renames, type changes, NOT NULL)
    removes = ["appointments.legacy_reason"]   # contract only: what it removes
    safe_after = "0007"       # contract only: the revision since which no release uses it
    lint_ignore = ["prefer-identity"]   # squawk rules that do not apply, with the reason
    data_changes = [                    # rows it deletes (or rewrites), each with a reason;
        {"table": "idempotency_keys", "change": "delete",   # the deploy shows them
         "reason": "keys of a format no release reads"},
    ]
"""

from __future__ import annotations

import ast
import inspect
import io
import textwrap
from typing import Any

from alembic import command
from alembic.script import Script, ScriptDirectory

from clinic.core.schema import alembic_config

PHASES = ("expand", "contract")


def _downgrade_works(script: Script) -> bool:
    """False when ``downgrade()`` is missing or only ``pass``/a docstring/``...``."""
    fn = getattr(script.module, "downgrade", None)
    if fn is None:
        return False
    tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
    body = tree.body[0].body  # type: ignore[attr-defined]
    for node in body:
        if isinstance(node, ast.Pass):
            continue
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue  # a docstring or ``...``
        return True
    return False


def describe(script: Script) -> dict[str, Any]:
    module = script.module
    return {
        "revision": script.revision,
        "down_revision": script.down_revision,
        "phase": getattr(module, "phase", "expand"),
        "removes": list(getattr(module, "removes", ())),
        "safe_after": getattr(module, "safe_after", None),
        "has_downgrade": _downgrade_works(script),
        "lint_ignore": list(getattr(module, "lint_ignore", ())),
        "data_changes": [
            d if isinstance(d, dict) else str(d) for d in getattr(module, "data_changes", ())
        ],
        "doc": (script.doc or "").strip(),
    }


def offline_sql(url: str, start: str | None, end: str) -> str:
    """The SQL Alembic would run to go from ``start`` (None: empty database) to ``end``."""
    cfg = alembic_config(url)
    buffer = io.StringIO()
    cfg.output_buffer = buffer
    command.upgrade(cfg, f"{start or 'base'}:{end}", sql=True)
    return buffer.getvalue()


def plan(url: str, current: str | None, *, include_sql: bool = True) -> dict[str, Any]:
    """The migrations from ``current`` to this code's head, each with its phase, what it
    removes, whether it can be undone, and its offline SQL."""
    script_dir = ScriptDirectory.from_config(alembic_config())
    history = list(reversed([s.revision for s in script_dir.walk_revisions()]))
    scripts = {s.revision: s for s in script_dir.walk_revisions()}
    head = script_dir.get_current_head()
    if current is not None and current not in scripts:
        raise ValueError(
            f"the database is at revision {current}, which this release does not know "
            "(a newer release migrated it)"
        )
    pending = history[history.index(current) + 1 :] if current else history
    revisions = []
    for rev in pending:
        entry = describe(scripts[rev])
        if include_sql:
            entry["sql"] = offline_sql(url, entry["down_revision"], rev)
        revisions.append(entry)
    return {
        "current": current,
        "head": head,
        "history": history,
        "phases": {rev: getattr(scripts[rev].module, "phase", "expand") for rev in history},
        "safe_after": {
            rev: scripts[rev].module.safe_after
            for rev in history
            if getattr(scripts[rev].module, "safe_after", None)
        },
        "revisions": revisions,
    }
