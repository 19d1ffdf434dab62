"""bluegreen's own files are the operator's alone, outside the directory instances get."""

from __future__ import annotations

import stat
import sys
from pathlib import Path

import pytest

from bluegreen.config import ConfigError, load_config
from bluegreen.daemon import ensure_token, token_path
from bluegreen.environment import base_env
from bluegreen.private import open_private, write_private
from bluegreen.state import StateStore

REPO = Path(__file__).resolve().parents[2]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_state_database_and_its_wal_files_are_0600_in_a_0700_dir(tmp_path: Path) -> None:
    db = tmp_path / "state" / "bluegreen.sqlite3"
    with StateStore(db) as store:
        store.set_live("blue", "r1")  # a write: the -wal and -shm files exist now
        wal, shm = db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")
        assert wal.exists() and shm.exists()
        assert (mode(db), mode(wal), mode(shm)) == (0o600, 0o600, 0o600)
    assert mode(db.parent) == 0o700


def test_a_world_readable_state_left_by_an_older_bluegreen_is_tightened(tmp_path: Path) -> None:
    db = tmp_path / "state" / "bluegreen.sqlite3"
    with StateStore(db) as store:
        store.set_live("blue", "r1")
    for path in (db.parent, db, *db.parent.glob("*-wal"), *db.parent.glob("*-shm")):
        path.chmod(0o755 if path.is_dir() else 0o644)
    with StateStore(db) as store:
        assert store.current().live_colour == "blue"
        for path in db.parent.iterdir():
            assert mode(path) == 0o600, path
    assert mode(db.parent) == 0o700


def test_private_files_logs_and_token(tmp_path: Path) -> None:
    with open_private(tmp_path / "var" / "logs" / "blue-1.log") as log:
        log.write("hello\n")
    write_private(tmp_path / "var" / "daemon.json", "{}")
    assert mode(tmp_path / "var" / "logs") == 0o700
    assert mode(tmp_path / "var" / "logs" / "blue-1.log") == 0o600
    assert mode(tmp_path / "var" / "daemon.json") == 0o600
    old = tmp_path / "var" / "logs" / "old.log"
    old.write_text("")
    old.chmod(0o644)
    open_private(old).close()
    assert mode(old) == 0o600


def write(tmp_path: Path, state: str) -> Path:
    path = tmp_path / "bluegreen.toml"
    path.write_text(
        f'[app]\nname = "t"\ncommand = "{sys.executable} app.py {{port}}"\n[state]\n{state}\n'
    )
    return path


def test_instances_get_the_app_dir_never_the_state_dir(tmp_path: Path) -> None:
    cfg = load_config(
        write(tmp_path, 'dir = "private"\napp_dir = "var"\ndir_env = "APP_VAR_DIR"'), environ={}
    )
    assert base_env(cfg)["APP_VAR_DIR"] == str((tmp_path / "var").resolve())
    token, generated = ensure_token(cfg)
    assert generated and token_path(cfg).read_text().strip() == token
    assert mode(token_path(cfg)) == 0o600 and mode(cfg.state.dir) == 0o700
    assert not token_path(cfg).is_relative_to(cfg.state.app)
    assert not cfg.state.db_path.is_relative_to(cfg.state.app)
    # Without app_dir, the app gets a directory of its own beside bluegreen's files.
    plain = load_config(write(tmp_path, 'dir = "var"\ndir_env = "APP_VAR_DIR"'), environ={})
    assert base_env(plain)["APP_VAR_DIR"] == str((tmp_path / "var" / "app").resolve())


@pytest.mark.parametrize("app_dir", ['"var"', '"."'])
def test_an_app_dir_holding_the_state_dir_is_refused(tmp_path: Path, app_dir: str) -> None:
    with pytest.raises(ConfigError, match=r"state\.app_dir: .* holds state\.dir"):
        load_config(write(tmp_path, f'dir = "var"\napp_dir = {app_dir}'), environ={})


def test_the_repositorys_config_keeps_the_token_and_state_away_from_instances() -> None:
    cfg = load_config(REPO / "bluegreen.toml", environ={})
    assert cfg.state.dir_env == "CLINIC_VAR_DIR"
    given = Path(base_env(cfg)["CLINIC_VAR_DIR"])
    for private in (token_path(cfg), cfg.state.db_path, cfg.state.logs_dir):
        assert not private.is_relative_to(given), private
