"""``python -m bluegreen``: the CLI."""

from __future__ import annotations

from bluegreen.cli import main

raise SystemExit(main())
