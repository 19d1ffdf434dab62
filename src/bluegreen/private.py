"""bluegreen's own files are the operator's alone: directories 0700, files 0600.

Its state database (with its ``-wal``/``-shm`` files), the admin token, the daemon's info
and log, instance and hook logs: created with these modes, and tightened when an older
bluegreen left them readable by others.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO

DIR_MODE = 0o700
FILE_MODE = 0o600


def private_dir(path: Path) -> Path:
    """``path`` (and missing parents) created if needed; ``path`` itself mode 0700."""
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    path.chmod(DIR_MODE)
    return path


def private_file(path: Path) -> Path:
    """``path`` created empty if missing, mode 0600 either way; its directory 0700."""
    private_dir(path.parent)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, FILE_MODE)
    os.close(fd)
    path.chmod(FILE_MODE)
    return path


def open_private(path: Path, mode: str = "a") -> IO[str]:
    """``path`` opened as text for appending (``"a"``) or replacing (``"w"``), mode 0600."""
    private_file(path)
    return path.open(mode, encoding="utf-8", buffering=1)


def open_private_binary(path: Path) -> IO[bytes]:
    """``path`` opened for appending bytes (a child's stdout), mode 0600."""
    private_file(path)
    return path.open("ab")


def write_private(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` in one step (rename of a 0600 temporary file)."""
    private_dir(path.parent)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(tmp, FILE_MODE)
    tmp.replace(path)
