"""The CLI shows what steps printed as text: square brackets in hook output (a scrubbed
"[redacted]", a "[shadow]" table name) are not taken for rich markup and swallowed."""

from __future__ import annotations

from rich.console import Console

from bluegreen.cli import _steps_table, verdict


def test_step_output_and_errors_keep_their_brackets() -> None:
    deploy = {
        "id": 7,
        "release_id": "abc123",
        "source": "path:/tmp/x",
        "status": "failed",
        "duration_s": 3.0,
        "error": "smoke: [step 2] failed",
        "steps": [
            {
                "name": "migrate",
                "status": "ok",
                "duration_s": 1.0,
                "started_at": None,
                "output": "demo accounts ...; password: [redacted]",
            }
        ],
    }
    console = Console(record=True, width=200)
    console.print(_steps_table(deploy))
    console.print(verdict(deploy))
    shown = console.export_text()
    assert "password: [redacted]" in shown
    assert "smoke: [step 2] failed" in shown
