"""Deployment history and current state, in one SQLite file (WAL mode).

Promises:

* at most one deploy is ``running`` at any time; the database enforces it with a
  partial unique index, so :meth:`StateStore.begin_deploy` raises
  :class:`~bluegreen.errors.DeployInProgress` even across processes;
* a step is recorded as ``running`` *before* it runs, so after a crash
  :meth:`StateStore.recover` tells where the interrupted deploy stood;
* timestamps are aware UTC datetimes (stored as ISO-8601 strings).

Designed for one writer process (the controller) plus any number of readers
(CLI status). Methods are synchronous and quick; a lock makes one store safe to
share between threads (e.g. ``asyncio.to_thread``).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, cast

from bluegreen.config import COLOURS, Colour
from bluegreen.errors import DeployInProgress, StateError
from bluegreen.private import FILE_MODE, private_file

DeployStatus = Literal["running", "succeeded", "failed", "aborted", "rolled_back", "interrupted"]
StepStatus = Literal["running", "ok", "failed", "skipped"]

DEPLOY_STATUSES: frozenset[str] = frozenset(
    {"running", "succeeded", "failed", "aborted", "rolled_back", "interrupted"}
)
FINAL_DEPLOY_STATUSES: frozenset[str] = DEPLOY_STATUSES - {"running"}
STEP_STATUSES: frozenset[str] = frozenset({"running", "ok", "failed", "skipped"})
FINAL_STEP_STATUSES: frozenset[str] = STEP_STATUSES - {"running"}

SCHEMA_VERSION = 2
OUTPUT_LIMIT = 16 * 1024
"""Characters of a step's output kept in the store (the tail: see :func:`tail`)."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS deploys (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    release_id  TEXT NOT NULL,
    source      TEXT NOT NULL,
    status      TEXT NOT NULL CHECK (status IN
                    ('running', 'succeeded', 'failed', 'aborted', 'rolled_back', 'interrupted')),
    started_at  TEXT NOT NULL,
    finished_at TEXT,
    error       TEXT,
    manual      INTEGER NOT NULL DEFAULT 0,
    scratch_url TEXT,
    migrate_from TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS deploys_one_running ON deploys (status)
    WHERE status = 'running';

CREATE TABLE IF NOT EXISTS steps (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    deploy_id   INTEGER NOT NULL REFERENCES deploys (id),
    name        TEXT NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('running', 'ok', 'failed', 'skipped')),
    started_at  TEXT NOT NULL,
    finished_at TEXT,
    output      TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS steps_by_deploy ON steps (deploy_id, id);

CREATE TABLE IF NOT EXISTS current (
    id               INTEGER PRIMARY KEY CHECK (id = 1),
    live_colour      TEXT CHECK (live_colour IN ('blue', 'green')),
    live_release     TEXT,
    previous_release TEXT,
    colours          TEXT NOT NULL DEFAULT '{}',
    updated_at       TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS instances (
    id          TEXT PRIMARY KEY,
    colour      TEXT NOT NULL CHECK (colour IN ('blue', 'green')),
    release_id  TEXT NOT NULL,
    host        TEXT NOT NULL,
    port        INTEGER NOT NULL,
    pid         INTEGER,
    updated_at  TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS releases (
    id             TEXT PRIMARY KEY,
    path           TEXT NOT NULL,
    venv_path      TEXT NOT NULL,
    deps_hash      TEXT NOT NULL,
    created_at     TEXT NOT NULL,
    migration_head TEXT
);
"""

# Version 2: deploys may end "interrupted" and remember their scratch database; instances
# are recorded so that a restarted daemon can adopt them.
_V1_TO_V2 = """
ALTER TABLE deploys RENAME TO deploys_v1;
DROP INDEX IF EXISTS deploys_one_running;
CREATE TABLE deploys (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    release_id  TEXT NOT NULL,
    source      TEXT NOT NULL,
    status      TEXT NOT NULL CHECK (status IN
                    ('running', 'succeeded', 'failed', 'aborted', 'rolled_back', 'interrupted')),
    started_at  TEXT NOT NULL,
    finished_at TEXT,
    error       TEXT,
    manual      INTEGER NOT NULL DEFAULT 0,
    scratch_url TEXT,
    migrate_from TEXT
);
INSERT INTO deploys (id, release_id, source, status, started_at, finished_at, error, manual)
    SELECT id, release_id, source, status, started_at, finished_at, error, manual
    FROM deploys_v1;
DROP TABLE deploys_v1
"""


def tail(text: str) -> str:
    """``text`` cut to its last :data:`OUTPUT_LIMIT` characters (marked with "…")."""
    return text if len(text) <= OUTPUT_LIMIT else "…" + text[-OUTPUT_LIMIT:]


def utc_now() -> datetime:
    """The current time as an aware UTC datetime."""
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Step:
    """One recorded step of a deploy."""

    deploy_id: int
    name: str
    status: StepStatus
    started_at: datetime
    finished_at: datetime | None
    output: str


@dataclass(frozen=True, slots=True)
class Deploy:
    """One deploy and (when loaded with them) its steps in order."""

    id: int
    release_id: str
    source: str
    status: DeployStatus
    started_at: datetime
    finished_at: datetime | None
    error: str | None
    manual: bool
    steps: tuple[Step, ...] = ()

    def running_step(self) -> Step | None:
        """The last step still marked running, if any."""
        for step in reversed(self.steps):
            if step.status == "running":
                return step
        return None


@dataclass(frozen=True, slots=True)
class Current:
    """What is live now; ``colours`` maps each colour to the release it runs (or None)."""

    live_colour: Colour | None
    live_release: str | None
    previous_release: str | None
    colours: dict[Colour, str | None] = field(default_factory=dict)
    updated_at: datetime | None = None

    def protected_releases(self) -> frozenset[str]:
        """Releases retention must keep: live, previous and whatever a colour runs."""
        ids = {self.live_release, self.previous_release, *self.colours.values()}
        return frozenset(i for i in ids if i is not None)


@dataclass(frozen=True, slots=True)
class InstanceRecord:
    """An instance process a daemon started (kept so that the next daemon adopts it)."""

    id: str
    colour: Colour
    release_id: str
    host: str
    port: int
    pid: int | None


@dataclass(frozen=True, slots=True)
class ReleaseRecord:
    """A materialised release as recorded in the database."""

    id: str
    path: Path
    venv_path: Path
    deps_hash: str
    created_at: datetime
    migration_head: str | None


def _ts(value: datetime) -> str:
    if value.tzinfo is None:
        raise ValueError("naive datetime; bluegreen stores aware UTC datetimes only")
    return value.astimezone(UTC).isoformat()


def _parse_ts(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def _req_ts(value: str) -> datetime:
    return datetime.fromisoformat(value)


class StateStore:
    """The state database at ``path`` (created, with parents, if missing): mode 0600 in a
    0700 directory; SQLite gives its ``-wal``/``-shm`` files the database file's mode."""

    def __init__(self, path: Path, *, clock: Callable[[], datetime] = utc_now) -> None:
        self.path = path
        self._clock = clock
        self._lock = threading.RLock()
        private_file(path)
        for companion in ("-wal", "-shm", "-journal"):
            sibling = path.with_name(path.name + companion)
            if sibling.exists():  # left readable by an older bluegreen
                sibling.chmod(FILE_MODE)
        self._db = sqlite3.connect(
            path, timeout=10.0, isolation_level=None, check_same_thread=False
        )
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        # Off while the schema may be rebuilt (a table rebuild drops the parent table).
        self._db.execute("PRAGMA foreign_keys=OFF")
        with self._tx() as db:
            version = int(db.execute("PRAGMA user_version").fetchone()[0])
            if version > SCHEMA_VERSION:
                raise StateError(
                    f"{path}: state schema version {version} is newer than this bluegreen "
                    f"({SCHEMA_VERSION}); upgrade bluegreen"
                )
            if version == 1:
                for statement in _V1_TO_V2.split(";"):
                    if statement.strip():
                        db.execute(statement)
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        self._db.execute("PRAGMA foreign_keys=ON")

    # ------------------------------------------------------------------ plumbing

    def close(self) -> None:
        """Close the connection; the store must not be used afterwards."""
        with self._lock:
            self._db.close()

    def __enter__(self) -> StateStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            else:
                self._db.execute("COMMIT")

    def _now(self) -> str:
        return _ts(self._clock())

    # ------------------------------------------------------------------ deploys

    def begin_deploy(self, release_id: str, source: str, manual: bool = False) -> int:
        """Record a new running deploy and return its id.

        Raises :class:`DeployInProgress` if another deploy is running.
        """
        try:
            with self._tx() as db:
                cur = db.execute(
                    "INSERT INTO deploys (release_id, source, status, started_at, manual) "
                    "VALUES (?, ?, 'running', ?, ?)",
                    (release_id, source, self._now(), int(manual)),
                )
                assert cur.lastrowid is not None
                return cur.lastrowid
        except sqlite3.IntegrityError:
            running = self.running_deploy()
            if running is None:  # pragma: no cover - it finished in between
                raise
            raise DeployInProgress(running.id, running.release_id) from None

    def set_deploy_release(self, deploy_id: int, release_id: str) -> None:
        """Name the release of a running deploy once it is known (after its prepare step)."""
        with self._tx() as db:
            self._require_running(db, deploy_id)
            db.execute("UPDATE deploys SET release_id = ? WHERE id = ?", (release_id, deploy_id))

    def step_started(self, deploy_id: int, name: str) -> None:
        """Record that step ``name`` of a running deploy is about to run."""
        with self._tx() as db:
            self._require_running(db, deploy_id)
            db.execute(
                "INSERT INTO steps (deploy_id, name, status, started_at) "
                "VALUES (?, ?, 'running', ?)",
                (deploy_id, name, self._now()),
            )

    def step_finished(
        self, deploy_id: int, name: str, status: StepStatus, output: str = ""
    ) -> None:
        """Finish the latest running step ``name`` (or record it if it never started)."""
        if status not in FINAL_STEP_STATUSES:
            raise ValueError(f"step status must be one of {sorted(FINAL_STEP_STATUSES)}")
        now = self._now()
        with self._tx() as db:
            row = db.execute(
                "SELECT id FROM steps WHERE deploy_id = ? AND name = ? AND status = 'running' "
                "ORDER BY id DESC LIMIT 1",
                (deploy_id, name),
            ).fetchone()
            if row is None:
                self._require_deploy(db, deploy_id)
                db.execute(
                    "INSERT INTO steps (deploy_id, name, status, started_at, finished_at, output) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (deploy_id, name, status, now, now, output),
                )
            else:
                db.execute(
                    "UPDATE steps SET status = ?, finished_at = ?, output = ? WHERE id = ?",
                    (status, now, output, row["id"]),
                )

    def finish_deploy(self, deploy_id: int, status: DeployStatus, error: str | None = None) -> None:
        """Mark a running deploy finished; steps still running are marked failed."""
        if status not in FINAL_DEPLOY_STATUSES:
            raise ValueError(f"deploy status must be one of {sorted(FINAL_DEPLOY_STATUSES)}")
        with self._tx() as db:
            self._require_running(db, deploy_id)
            self._finish(db, deploy_id, status, error, step_note=error or f"deploy {status}")

    def _finish(
        self,
        db: sqlite3.Connection,
        deploy_id: int,
        status: str,
        error: str | None,
        *,
        step_note: str,
    ) -> None:
        now = self._now()
        db.execute(
            "UPDATE steps SET status = 'failed', finished_at = ?, "
            "output = CASE WHEN output = '' THEN ? ELSE output || char(10) || ? END "
            "WHERE deploy_id = ? AND status = 'running'",
            (now, step_note, step_note, deploy_id),
        )
        db.execute(
            "UPDATE deploys SET status = ?, finished_at = ?, error = ? WHERE id = ?",
            (status, now, error, deploy_id),
        )

    def _require_deploy(self, db: sqlite3.Connection, deploy_id: int) -> str:
        row = db.execute("SELECT status FROM deploys WHERE id = ?", (deploy_id,)).fetchone()
        if row is None:
            raise StateError(f"deploy #{deploy_id} does not exist")
        return str(row["status"])

    def _require_running(self, db: sqlite3.Connection, deploy_id: int) -> None:
        status = self._require_deploy(db, deploy_id)
        if status != "running":
            raise StateError(f"deploy #{deploy_id} is {status}, not running")

    def deploy(self, deploy_id: int) -> Deploy | None:
        """One deploy with its steps, or ``None``."""
        with self._lock:
            row = self._db.execute("SELECT * FROM deploys WHERE id = ?", (deploy_id,)).fetchone()
            return None if row is None else self._load_deploys([row])[0]

    def running_deploy(self) -> Deploy | None:
        """The running deploy with its steps, or ``None``."""
        with self._lock:
            row = self._db.execute("SELECT * FROM deploys WHERE status = 'running'").fetchone()
            return None if row is None else self._load_deploys([row])[0]

    def history(self, limit: int = 20) -> list[Deploy]:
        """The latest ``limit`` deploys, newest first, each with its steps."""
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM deploys ORDER BY id DESC LIMIT ?", (limit,)
            ).fetchall()
            return self._load_deploys(rows)

    def _load_deploys(self, rows: list[sqlite3.Row]) -> list[Deploy]:
        if not rows:
            return []
        ids = [int(r["id"]) for r in rows]
        marks = ",".join("?" * len(ids))
        steps: dict[int, list[Step]] = {i: [] for i in ids}
        for s in self._db.execute(
            f"SELECT * FROM steps WHERE deploy_id IN ({marks}) ORDER BY id",  # noqa: S608
            ids,
        ):
            steps[int(s["deploy_id"])].append(
                Step(
                    deploy_id=int(s["deploy_id"]),
                    name=str(s["name"]),
                    status=cast(StepStatus, s["status"]),
                    started_at=_req_ts(s["started_at"]),
                    finished_at=_parse_ts(s["finished_at"]),
                    output=str(s["output"]),
                )
            )
        return [
            Deploy(
                id=int(r["id"]),
                release_id=str(r["release_id"]),
                source=str(r["source"]),
                status=cast(DeployStatus, r["status"]),
                started_at=_req_ts(r["started_at"]),
                finished_at=_parse_ts(r["finished_at"]),
                error=r["error"],
                manual=bool(r["manual"]),
                steps=tuple(steps[int(r["id"])]),
            )
            for r in rows
        ]

    # ------------------------------------------------------------------ recovery

    def recover(self) -> Deploy | None:
        """At controller startup: the deploy a previous controller left running, if any."""
        return self.running_deploy()

    def abort_interrupted(self, reason: str, status: DeployStatus = "aborted") -> Deploy | None:
        """Mark the interrupted deploy ``status`` (its running step failed); return it as now."""
        with self._tx() as db:
            row = db.execute("SELECT id FROM deploys WHERE status = 'running'").fetchone()
            if row is None:
                return None
            deploy_id = int(row["id"])
            self._finish(db, deploy_id, status, reason, step_note=f"interrupted: {reason}")
        return self.deploy(deploy_id)

    def set_scratch(self, deploy_id: int, url: str | None) -> None:
        """Remember (or forget, ``None``) the scratch database a deploy created, so that it
        can be dropped after a crash."""
        with self._tx() as db:
            db.execute("UPDATE deploys SET scratch_url = ? WHERE id = ?", (url, deploy_id))

    def set_migrate_from(self, deploy_id: int, revision: str) -> None:
        """Remember the schema revision before the deploy's migrate hook runs ("" = empty),
        so that an interrupted deploy's migration can be undone."""
        with self._tx() as db:
            db.execute("UPDATE deploys SET migrate_from = ? WHERE id = ?", (revision, deploy_id))

    def migrate_from(self, deploy_id: int) -> str | None:
        """The revision before the deploy migrated; ``None`` if it never started migrating."""
        with self._lock:
            row = self._db.execute(
                "SELECT migrate_from FROM deploys WHERE id = ?", (deploy_id,)
            ).fetchone()
        return None if row is None else row["migrate_from"]

    def scratch(self, deploy_id: int) -> str | None:
        """The scratch database a deploy created and did not drop, if any."""
        with self._lock:
            row = self._db.execute(
                "SELECT scratch_url FROM deploys WHERE id = ?", (deploy_id,)
            ).fetchone()
        return None if row is None else row["scratch_url"]

    # ------------------------------------------------------------------ current

    def current(self) -> Current:
        """What is live now (all ``None`` before the first deploy)."""
        with self._lock:
            row = self._db.execute("SELECT * FROM current WHERE id = 1").fetchone()
        if row is None:
            return Current(None, None, None, {c: None for c in COLOURS})
        raw = json.loads(row["colours"])
        colours: dict[Colour, str | None] = {c: raw.get(c) for c in COLOURS}
        return Current(
            live_colour=cast("Colour | None", row["live_colour"]),
            live_release=row["live_release"],
            previous_release=row["previous_release"],
            colours=colours,
            updated_at=_parse_ts(row["updated_at"]),
        )

    def set_colour_release(self, colour: Colour, release: str | None) -> Current:
        """Record which release ``colour`` runs now (``None``: nothing)."""
        return self._update_current(colour, release, make_live=False)

    def set_live(self, colour: Colour, release: str) -> Current:
        """Make ``colour`` running ``release`` live; the old live release becomes previous."""
        return self._update_current(colour, release, make_live=True)

    def restore_live(self, colour: Colour, release: str, *, rolled_back: str | None) -> Current:
        """A rollback made ``colour`` running ``release`` live again: the release it was
        rolled back from never becomes previous; previous is the last good release
        (:meth:`last_good_release`) other than these two."""
        self._update_current(colour, release, make_live=True)
        exclude = {release} if rolled_back is None else {release, rolled_back}
        previous = self.last_good_release(exclude=exclude)
        with self._tx() as db:
            db.execute("UPDATE current SET previous_release = ? WHERE id = 1", (previous,))
        return self.current()

    def last_good_release(self, *, exclude: set[str]) -> str | None:
        """The release of the newest deploy that succeeded (passed its checks, analysis
        included) and was not rolled back by a later deploy of the same release."""
        with self._lock:
            rows = self._db.execute(
                "SELECT d.release_id FROM deploys d WHERE d.status = 'succeeded' AND NOT EXISTS "
                "(SELECT 1 FROM deploys r WHERE r.release_id = d.release_id "
                "AND r.status = 'rolled_back' AND r.id > d.id) ORDER BY d.id DESC"
            ).fetchall()
        return next((r["release_id"] for r in rows if r["release_id"] not in exclude), None)

    def last_rolled_back(self) -> str | None:
        """The release of the newest deploy that was rolled back, if any."""
        with self._lock:
            row = self._db.execute(
                "SELECT release_id FROM deploys WHERE status = 'rolled_back' "
                "ORDER BY id DESC LIMIT 1"
            ).fetchone()
        return None if row is None else str(row["release_id"])

    def _update_current(self, colour: Colour, release: str | None, *, make_live: bool) -> Current:
        if colour not in COLOURS:
            raise ValueError(f"colour must be one of {COLOURS}, got {colour!r}")
        cur = self.current()
        colours = dict(cur.colours)
        colours[colour] = release
        live_colour, live_release, previous = (
            cur.live_colour,
            cur.live_release,
            cur.previous_release,
        )
        if make_live:
            if release != cur.live_release and cur.live_release is not None:
                previous = cur.live_release
            live_colour, live_release = colour, release
        elif colour == cur.live_colour:
            live_release = release
        with self._tx() as db:
            db.execute(
                "INSERT INTO current (id, live_colour, live_release, previous_release, colours, "
                "updated_at) VALUES (1, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET "
                "live_colour = excluded.live_colour, live_release = excluded.live_release, "
                "previous_release = excluded.previous_release, colours = excluded.colours, "
                "updated_at = excluded.updated_at",
                (live_colour, live_release, previous, json.dumps(colours), self._now()),
            )
        return self.current()

    # ------------------------------------------------------------------ instances

    def record_instance(
        self, id: str, *, colour: Colour, release_id: str, host: str, port: int, pid: int | None
    ) -> None:
        """Remember (or update) an instance process."""
        with self._tx() as db:
            db.execute(
                "INSERT INTO instances (id, colour, release_id, host, port, pid, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET "
                "colour = excluded.colour, release_id = excluded.release_id, "
                "host = excluded.host, port = excluded.port, pid = excluded.pid, "
                "updated_at = excluded.updated_at",
                (id, colour, release_id, host, port, pid, self._now()),
            )

    def forget_instance(self, id: str) -> None:
        """The instance was stopped."""
        with self._tx() as db:
            db.execute("DELETE FROM instances WHERE id = ?", (id,))

    def instances(self) -> list[InstanceRecord]:
        """Every recorded instance, oldest first."""
        with self._lock:
            rows = self._db.execute("SELECT * FROM instances ORDER BY rowid").fetchall()
        return [
            InstanceRecord(
                id=str(r["id"]),
                colour=cast(Colour, r["colour"]),
                release_id=str(r["release_id"]),
                host=str(r["host"]),
                port=int(r["port"]),
                pid=None if r["pid"] is None else int(r["pid"]),
            )
            for r in rows
        ]

    # ------------------------------------------------------------------ releases

    def record_release(
        self,
        release_id: str,
        *,
        path: Path,
        venv_path: Path,
        deps_hash: str,
        migration_head: str | None = None,
    ) -> ReleaseRecord:
        """Insert or update a release; ``created_at`` is kept from the first record."""
        with self._tx() as db:
            db.execute(
                "INSERT INTO releases (id, path, venv_path, deps_hash, created_at, migration_head) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET path = excluded.path, "
                "venv_path = excluded.venv_path, deps_hash = excluded.deps_hash, "
                "migration_head = COALESCE(excluded.migration_head, releases.migration_head)",
                (release_id, str(path), str(venv_path), deps_hash, self._now(), migration_head),
            )
        rec = self.release(release_id)
        assert rec is not None
        return rec

    def set_migration_head(self, release_id: str, head: str | None) -> None:
        """Record the migration head the release's migrate hook reached."""
        with self._tx() as db:
            cur = db.execute(
                "UPDATE releases SET migration_head = ? WHERE id = ?", (head, release_id)
            )
            if cur.rowcount == 0:
                raise StateError(f"release {release_id} is not recorded")

    def forget_release(self, release_id: str) -> None:
        """Drop a release record (after retention removed its directory)."""
        with self._tx() as db:
            db.execute("DELETE FROM releases WHERE id = ?", (release_id,))

    def release(self, release_id: str) -> ReleaseRecord | None:
        """One recorded release, or ``None``."""
        with self._lock:
            row = self._db.execute("SELECT * FROM releases WHERE id = ?", (release_id,)).fetchone()
        return None if row is None else _release_row(row)

    def releases(self) -> list[ReleaseRecord]:
        """All recorded releases, newest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM releases ORDER BY created_at DESC, rowid DESC"
            ).fetchall()
        return [_release_row(r) for r in rows]


def _release_row(row: sqlite3.Row) -> ReleaseRecord:
    return ReleaseRecord(
        id=str(row["id"]),
        path=Path(row["path"]),
        venv_path=Path(row["venv_path"]),
        deps_hash=str(row["deps_hash"]),
        created_at=_req_ts(row["created_at"]),
        migration_head=row["migration_head"],
    )
