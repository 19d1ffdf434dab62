from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bluegreen.errors import DeployInProgress, StateError
from bluegreen.state import StateStore


@pytest.fixture
def store(tmp_path: Path) -> Iterator[StateStore]:
    with StateStore(tmp_path / "state" / "bluegreen.sqlite3") as s:
        yield s


def test_wal_mode_and_file_created(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "db.sqlite3"
    with StateStore(path):
        pass
    assert path.exists()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()


def test_deploy_lifecycle_with_steps(store: StateStore) -> None:
    dep = store.begin_deploy("abc123", "HEAD", manual=False)
    store.step_started(dep, "prepare")
    running = store.running_deploy()
    assert running is not None and running.id == dep
    step = running.running_step()
    assert step is not None and step.name == "prepare"
    assert step.started_at.tzinfo is not None
    assert step.started_at.utcoffset() == timedelta(0)
    store.step_finished(dep, "prepare", "ok", "materialised")
    store.step_finished(dep, "smoke", "skipped", "no smoke hook")
    store.finish_deploy(dep, "succeeded")
    assert store.running_deploy() is None
    [d] = store.history(10)
    assert d.status == "succeeded" and d.finished_at is not None and d.error is None
    assert [(s.name, s.status, s.output) for s in d.steps] == [
        ("prepare", "ok", "materialised"),
        ("smoke", "skipped", "no smoke hook"),
    ]
    assert not d.manual


def test_only_one_running_deploy(store: StateStore) -> None:
    first = store.begin_deploy("r1", "HEAD")
    with pytest.raises(DeployInProgress) as info:
        store.begin_deploy("r2", "main", manual=True)
    assert info.value.deploy_id == first
    assert info.value.release_id == "r1"
    assert info.value.exit_code == 3
    store.finish_deploy(first, "failed", "boom")
    second = store.begin_deploy("r2", "main", manual=True)
    assert second != first


def test_one_running_enforced_across_connections(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    with StateStore(path) as a, StateStore(path) as b:
        a.begin_deploy("r1", "HEAD")
        with pytest.raises(DeployInProgress):
            b.begin_deploy("r2", "HEAD")


def test_history_newest_first_with_limit(store: StateStore) -> None:
    ids = []
    for i in range(3):
        d = store.begin_deploy(f"r{i}", "HEAD")
        store.finish_deploy(d, "succeeded")
        ids.append(d)
    assert [d.id for d in store.history(2)] == [ids[2], ids[1]]


def test_finish_marks_running_steps_failed_and_rejects_double_finish(store: StateStore) -> None:
    dep = store.begin_deploy("r1", "HEAD")
    store.step_started(dep, "start green")
    store.finish_deploy(dep, "failed", "green never became ready")
    d = store.deploy(dep)
    assert d is not None
    assert d.error == "green never became ready"
    assert d.steps[0].status == "failed"
    assert "green never became ready" in d.steps[0].output
    with pytest.raises(StateError, match="is failed, not running"):
        store.finish_deploy(dep, "succeeded")
    with pytest.raises(StateError):
        store.step_started(dep, "late")
    with pytest.raises(ValueError, match="deploy status"):
        store.finish_deploy(dep, "running")
    with pytest.raises(ValueError, match="step status"):
        store.step_finished(dep, "x", "running")


def test_recover_and_abort_interrupted(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    with StateStore(path) as s:
        dep = s.begin_deploy("r1", "HEAD")
        s.step_started(dep, "prepare")
        s.step_finished(dep, "prepare", "ok")
        s.step_started(dep, "migrate")
    # A new controller process opens the same database.
    with StateStore(path) as s:
        interrupted = s.recover()
        assert interrupted is not None and interrupted.id == dep
        step = interrupted.running_step()
        assert step is not None and step.name == "migrate"
        aborted = s.abort_interrupted("controller restarted")
        assert aborted is not None
        assert aborted.status == "aborted"
        assert aborted.error == "controller restarted"
        assert [(st.name, st.status) for st in aborted.steps] == [
            ("prepare", "ok"),
            ("migrate", "failed"),
        ]
        assert "interrupted: controller restarted" in aborted.steps[1].output
        assert s.recover() is None
        assert s.abort_interrupted("again") is None
        s.begin_deploy("r2", "HEAD")  # no longer blocked


def test_current_live_previous_and_colours(store: StateStore) -> None:
    cur = store.current()
    assert cur.live_colour is None and cur.live_release is None
    assert cur.colours == {"blue": None, "green": None}
    store.set_live("blue", "r1")
    store.set_colour_release("green", "r2")
    cur = store.current()
    assert (cur.live_colour, cur.live_release, cur.previous_release) == ("blue", "r1", None)
    assert cur.colours == {"blue": "r1", "green": "r2"}
    cur = store.set_live("green", "r2")
    assert (cur.live_colour, cur.live_release, cur.previous_release) == ("green", "r2", "r1")
    assert cur.protected_releases() == {"r1", "r2"}
    store.set_colour_release("blue", None)
    cur = store.current()
    assert cur.colours == {"blue": None, "green": "r2"}
    assert cur.previous_release == "r1"
    assert cur.updated_at is not None and cur.updated_at.tzinfo is not None


def test_releases_record_and_list(store: StateStore, tmp_path: Path) -> None:
    store.record_release("r1", path=tmp_path / "r1", venv_path=tmp_path / "e", deps_hash="h1")
    store.record_release("r2", path=tmp_path / "r2", venv_path=tmp_path / "e", deps_hash="h1")
    store.set_migration_head("r1", "0007")
    again = store.record_release(
        "r1", path=tmp_path / "r1", venv_path=tmp_path / "e2", deps_hash="h2"
    )
    assert again.migration_head == "0007"  # kept when not given
    assert again.venv_path == tmp_path / "e2"
    assert {r.id for r in store.releases()} == {"r1", "r2"}
    store.forget_release("r2")
    assert [r.id for r in store.releases()] == ["r1"]
    with pytest.raises(StateError, match="not recorded"):
        store.set_migration_head("nope", "1")


def test_injected_clock_and_timestamps_are_aware_utc(tmp_path: Path) -> None:
    t = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    with StateStore(tmp_path / "db", clock=lambda: t) as s:
        dep = s.begin_deploy("r1", "HEAD")
        d = s.deploy(dep)
        assert d is not None and d.started_at == t
    with (
        pytest.raises(ValueError, match="naive"),
        StateStore(
            tmp_path / "db2",
            clock=lambda: datetime(2030, 1, 1),
        ) as s2,
    ):
        s2.begin_deploy("r1", "HEAD")


def test_safe_to_share_between_threads(store: StateStore) -> None:
    dep = store.begin_deploy("r1", "HEAD")
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(20):
                store.step_finished(dep, f"t{n}-{i}", "ok")
                store.history(5)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    d = store.deploy(dep)
    assert d is not None and len(d.steps) == 80


def test_version_1_store_is_upgraded_keeping_history(tmp_path: Path) -> None:
    """A state file of the previous schema keeps its deploys and learns the new status."""
    path = tmp_path / "old.sqlite3"
    db = sqlite3.connect(path)
    db.executescript(
        """
        CREATE TABLE deploys (id INTEGER PRIMARY KEY AUTOINCREMENT, release_id TEXT NOT NULL,
            source TEXT NOT NULL, status TEXT NOT NULL CHECK (status IN
            ('running', 'succeeded', 'failed', 'aborted', 'rolled_back')),
            started_at TEXT NOT NULL, finished_at TEXT, error TEXT,
            manual INTEGER NOT NULL DEFAULT 0);
        CREATE UNIQUE INDEX deploys_one_running ON deploys (status) WHERE status = 'running';
        CREATE TABLE steps (id INTEGER PRIMARY KEY AUTOINCREMENT,
            deploy_id INTEGER NOT NULL REFERENCES deploys (id), name TEXT NOT NULL,
            status TEXT NOT NULL, started_at TEXT NOT NULL, finished_at TEXT,
            output TEXT NOT NULL DEFAULT '');
        INSERT INTO deploys (release_id, source, status, started_at)
            VALUES ('r1', 'HEAD', 'running', '2026-01-01T00:00:00+00:00');
        INSERT INTO steps (deploy_id, name, status, started_at)
            VALUES (1, 'prepare', 'running', '2026-01-01T00:00:00+00:00');
        PRAGMA user_version = 1;
        """
    )
    db.close()
    with StateStore(path) as s:
        s.set_scratch(1, "postgresql://scratch")
        assert s.scratch(1) == "postgresql://scratch"
        d = s.abort_interrupted("the daemon died", status="interrupted")
        assert d is not None and d.status == "interrupted" and d.release_id == "r1"
        assert [(st.name, st.status) for st in d.steps] == [("prepare", "failed")]
        with pytest.raises(DeployInProgress):
            s.begin_deploy("r2", "HEAD")
            s.begin_deploy("r3", "HEAD")


def test_an_interrupted_deploy_keeps_its_migration_once_users_reached_its_colour() -> None:
    from bluegreen.recovery import served_users

    before = {"migrate": "ok", "start": "ok", "ready": "ok", "smoke": "running"}
    assert not served_users(before)  # undone, as a failed verify would
    assert not served_users({**before, "smoke": "ok", "phases": "skipped"})
    # A phased switch had sent sessions to it (killed during, or after, the phases), or it
    # was switched: users may have written through the new schema.
    for phases in ("running", "ok", "failed"):
        assert served_users({**before, "smoke": "ok", "phases": phases})
    assert served_users({**before, "smoke": "ok", "switch": "ok"})
