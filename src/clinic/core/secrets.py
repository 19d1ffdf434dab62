"""Secrets generated on first use and kept under ``var/secrets`` readable only by the owner."""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def generated_secret(path: Path, *, length: int = 24) -> str:
    """The secret stored at ``path``, created (mode 0600) if it does not exist yet."""
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    value = secrets.token_urlsafe(length)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    return value
