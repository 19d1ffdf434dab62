"""Secrets generated on first use and kept under ``var/secrets`` readable only by the owner."""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path


def private_dir(path: Path) -> Path:
    """``path`` as a directory, each part of it that is missing created 0700.

    An existing directory is left as it is: as root, the embedded PostgreSQL runs as another
    user that must traverse ``var/`` to its data (which PostgreSQL itself keeps 0700).
    """
    for part in reversed([path, *path.parents]):
        if not part.exists():
            with contextlib.suppress(FileExistsError):
                part.mkdir(mode=0o700)
    return path


def generated_secret(path: Path, *, length: int = 24) -> str:
    """The secret stored at ``path``, created (mode 0600, directory 0700) if missing.

    Safe when several processes sharing the directory start at once: the file appears whole
    (written aside, then linked into place) and the first one to link it wins; the others read
    the winner's value, so every instance sharing ``var/`` uses the same secret.
    """
    if path.exists():
        return _read(path)
    private_dir(path.parent)
    if path.parent.stat().st_uid == os.getuid():
        os.chmod(path.parent, 0o700)
    value = secrets.token_urlsafe(length)
    draft = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(value + "\n")
        with contextlib.suppress(FileExistsError):
            os.link(draft, path)
    finally:
        draft.unlink()
    return _read(path)


def _read(path: Path) -> str:
    value = path.read_text().strip()
    if not value:
        raise ValueError(f"{path} is empty: delete it to have a new secret generated")
    return value
