from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bluegreen.errors import ReleaseError
from bluegreen.lockfile import requirement_name, runtime_lock
from bluegreen.release import Release, deps_spec, list_releases, prepare_release

PYPROJECT = """\
[project]
name = "tiny"
version = "0.1"
requires-python = ">=3.11"
dependencies = []
"""


def git(repo: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.invalid",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.invalid",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_CONFIG_SYSTEM": os.devnull,
    }
    out = subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True, env=env
    )
    return out.stdout.strip()


def commit(repo: Path, files: dict[str, str], message: str = "c") -> str:
    for name, text in files.items():
        p = repo / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "--short=12", "HEAD")


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    r = tmp_path / "src-repo"
    r.mkdir()
    git(r, "init", "-q", "-b", "main")
    commit(
        r,
        {
            "pyproject.toml": PYPROJECT,
            "src/tiny/__init__.py": "VALUE = 1\n",
        },
    )
    return r


@pytest.fixture
def releases_dir(tmp_path: Path) -> Path:
    return tmp_path / "var" / "releases"


def prep(repo: Path, releases_dir: Path, logs: list[str] | None = None, **kw: object) -> Release:
    lines = logs if logs is not None else []
    args: dict[str, object] = {
        "source_repo": repo,
        "ref": None,
        "path": None,
        "releases_dir": releases_dir,
        "keep": 3,
        "python": sys.executable,
        "log": lines.append,
    }
    args.update(kw)
    return prepare_release(**args)  # type: ignore[arg-type]


def run_in_release(rel: Release, code: str) -> str:
    out = subprocess.run(
        [str(rel.python), "-c", code],
        env={**os.environ, **rel.env()},
        cwd=rel.dir,
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout.strip()


def test_ref_release_id_is_short_hash_and_code_runs(repo: Path, releases_dir: Path) -> None:
    head = git(repo, "rev-parse", "--short=12", "HEAD")
    (repo / "src" / "tiny" / "__init__.py").write_text("VALUE = 'uncommitted'\n")
    rel = prep(repo, releases_dir)
    assert rel.id == head and len(rel.id) == 12
    assert rel.dir == releases_dir.resolve() / head
    assert rel.source == "HEAD"
    assert (rel.dir / "src" / "tiny" / "__init__.py").read_text() == "VALUE = 1\n"
    assert rel.python == rel.venv / "bin" / "python"
    assert rel.venv.parent == releases_dir.resolve().parent / "envs"
    assert rel.env()["PYTHONPATH"] == str(rel.dir / "src")
    assert rel.env()["BLUEGREEN_RELEASE"] == rel.id
    out = run_in_release(rel, "import sys, tiny; print(tiny.VALUE, sys.prefix)")
    assert out == f"1 {rel.venv}"


def test_same_deps_reuse_env_changed_deps_new_env(repo: Path, releases_dir: Path) -> None:
    logs: list[str] = []
    first = prep(repo, releases_dir, logs)
    assert not first.env_reused
    commit(repo, {"src/tiny/__init__.py": "VALUE = 2\n"})
    logs.clear()
    second = prep(repo, releases_dir, logs)
    assert second.id != first.id
    assert second.env_reused
    assert second.venv == first.venv and second.deps_hash == first.deps_hash
    assert any("reused" in line for line in logs)
    assert run_in_release(second, "import tiny; print(tiny.VALUE)") == "2"

    commit(
        repo,
        {
            "pyproject.toml": PYPROJECT.replace(
                'requires-python = ">=3.11"', 'requires-python = ">=3.10"'
            )
        },
    )
    third = prep(repo, releases_dir)
    assert not third.env_reused
    assert third.deps_hash != first.deps_hash
    assert third.venv != first.venv
    assert (third.venv / "bin" / "python").exists()


def test_requirements_txt_changes_deps_hash(tmp_path: Path) -> None:
    d = tmp_path / "app"
    d.mkdir()
    (d / "pyproject.toml").write_text(PYPROJECT)
    h1 = deps_spec(d, sys.executable)
    assert h1.empty
    (d / "requirements-dev.txt").write_text("pytest\n")
    h2 = deps_spec(d, sys.executable)
    assert h2.hash != h1.hash
    assert h2.requirement_files == ()  # only requirements.txt is installed
    (d / "requirements.txt").write_text("attrs\n")
    h3 = deps_spec(d, sys.executable)
    assert h3.requirement_files == (d / "requirements.txt",)
    assert not h3.empty


def test_pyproject_without_project_table_hashes_bytes(tmp_path: Path) -> None:
    d = tmp_path / "app"
    d.mkdir()
    (d / "pyproject.toml").write_text("[tool.x]\na = 1\n")
    h1 = deps_spec(d, sys.executable)
    (d / "pyproject.toml").write_text("[tool.x]\na = 2\n")
    assert deps_spec(d, sys.executable).hash != h1.hash
    assert deps_spec(d, sys.executable).empty


def test_incomplete_env_is_rebuilt(repo: Path, releases_dir: Path) -> None:
    first = prep(repo, releases_dir)
    (first.venv / ".bluegreen-complete").unlink()
    commit(repo, {"src/tiny/__init__.py": "VALUE = 3\n"})
    logs: list[str] = []
    second = prep(repo, releases_dir, logs)
    assert not second.env_reused
    assert any("incomplete, rebuilding" in line for line in logs)
    assert (second.venv / ".bluegreen-complete").exists()


def test_path_release_id_stable_for_same_content(tmp_path: Path, releases_dir: Path) -> None:
    app = tmp_path / "app"
    (app / "src" / "tiny").mkdir(parents=True)
    (app / "pyproject.toml").write_text(PYPROJECT)
    (app / "src" / "tiny" / "__init__.py").write_text("VALUE = 'path'\n")
    for junk in (".git/HEAD", ".venv/x", "var/state", "src/tiny/__pycache__/x.pyc", "a.egg-info/x"):
        (app / junk).parent.mkdir(parents=True, exist_ok=True)
        (app / junk).write_text("junk")
    a = prep(app, releases_dir, path=app, source_repo=None)
    assert a.id.startswith("p") and len(a.id) == 13
    assert a.source == str(app.resolve())
    assert not (a.dir / ".git").exists() and not (a.dir / ".venv").exists()
    assert not (a.dir / "var").exists() and not (a.dir / "a.egg-info").exists()
    assert not (a.dir / "src" / "tiny" / "__pycache__").exists()
    (app / ".venv" / "x").write_text("other junk")  # ignored: same id
    b = prep(app, releases_dir, path=app, source_repo=None)
    assert b.id == a.id
    assert run_in_release(b, "import tiny; print(tiny.VALUE)") == "path"
    (app / "src" / "tiny" / "__init__.py").write_text("VALUE = 'changed'\n")
    c = prep(app, releases_dir, path=app, source_repo=None)
    assert c.id != a.id
    assert not list(releases_dir.glob(".tmp-*"))


def test_path_inside_its_own_releases_dir_is_not_copied_into_itself(tmp_path: Path) -> None:
    app = tmp_path / "app"
    app.mkdir()
    (app / "main.py").write_text("print('hi')\n")
    rel = prep(app, app / "deploy" / "releases", path=app, source_repo=None)
    assert not (rel.dir / "deploy" / "releases").exists()
    assert not (rel.dir / "deploy" / "envs").exists()
    assert (rel.dir / "main.py").exists()
    assert rel.env()["PYTHONPATH"] == str(rel.dir)  # no src/: the release dir itself


def test_retention_keeps_newest_and_protected(repo: Path, releases_dir: Path) -> None:
    ids = [prep(repo, releases_dir, keep=2).id]
    for i in range(4):
        commit(repo, {"src/tiny/__init__.py": f"VALUE = {i + 10}\n"})
        ids.append(prep(repo, releases_dir, keep=2, protect={ids[0]}).id)
    on_disk = set(list_releases(releases_dir))
    assert on_disk == {ids[0], ids[3], ids[4]}
    assert list_releases(releases_dir)[0] == ids[4]
    commit(repo, {"src/tiny/__init__.py": "VALUE = 99\n"})
    last = prep(repo, releases_dir, keep=2)  # ids[0] no longer protected
    assert set(list_releases(releases_dir)) == {ids[4], last.id}


def test_retention_removes_unused_envs(repo: Path, releases_dir: Path) -> None:
    old = prep(repo, releases_dir, keep=1)
    commit(repo, {"pyproject.toml": PYPROJECT.replace("0.1", "0.2").replace(">=3.11", ">=3.9")})
    new = prep(repo, releases_dir, keep=1)
    assert new.venv != old.venv
    assert not old.dir.exists()
    assert not old.venv.exists()
    assert new.venv.exists()


def test_bad_ref_and_bad_arguments(repo: Path, releases_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ReleaseError, match="resolving git ref 'nope'"):
        prep(repo, releases_dir, ref="nope")
    with pytest.raises(ReleaseError, match="not both"):
        prep(repo, releases_dir, ref="HEAD", path=repo)
    with pytest.raises(ReleaseError, match="not a directory"):
        prep(repo, releases_dir, path=tmp_path / "missing")
    assert not list(releases_dir.glob(".tmp-*"))


def test_named_ref(repo: Path, releases_dir: Path) -> None:
    first = git(repo, "rev-parse", "--short=12", "HEAD")
    git(repo, "tag", "v1")
    commit(repo, {"src/tiny/__init__.py": "VALUE = 5\n"})
    rel = prep(repo, releases_dir, ref="v1")
    assert rel.id == first and rel.source == "v1"


def make_wheel(where: Path, value: str) -> Path:
    """A minimal pure-Python wheel, so pip installs without any network."""
    import zipfile

    wheel = where / "tinydep-1.0-py3-none-any.whl"
    files = {
        "tinydep/__init__.py": f"VALUE = {value!r}\n",
        "tinydep-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: tinydep\nVersion: 1.0\n",
        "tinydep-1.0.dist-info/WHEEL": (
            "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    record = "".join(f"{name},,\n" for name in files) + "tinydep-1.0.dist-info/RECORD,,\n"
    with zipfile.ZipFile(wheel, "w") as z:
        for name, text in files.items():
            z.writestr(name, text)
        z.writestr("tinydep-1.0.dist-info/RECORD", record)
    return wheel


@pytest.mark.slow
def test_dependencies_are_installed_into_the_shared_env(
    repo: Path, releases_dir: Path, tmp_path: Path
) -> None:
    wheel = make_wheel(tmp_path, "from-wheel")
    pyproject = PYPROJECT.replace(
        "dependencies = []", f'dependencies = ["tinydep @ {wheel.as_uri()}"]'
    )
    commit(repo, {"pyproject.toml": pyproject})
    logs: list[str] = []
    rel = prep(repo, releases_dir, logs)
    assert not rel.env_reused
    assert run_in_release(rel, "import tinydep, tiny; print(tinydep.VALUE, tiny.VALUE)") == (
        "from-wheel 1"
    )
    assert any("tinydep" in line for line in logs)  # pip output was streamed
    commit(repo, {"src/tiny/__init__.py": "VALUE = 7\n"})
    again = prep(repo, releases_dir)
    assert again.env_reused and again.venv == rel.venv
    assert run_in_release(again, "import tinydep, tiny; print(tinydep.VALUE, tiny.VALUE)") == (
        "from-wheel 7"
    )


@pytest.mark.slow
def test_pip_failure_is_reported_and_env_removed(
    repo: Path, releases_dir: Path, tmp_path: Path
) -> None:
    missing = tmp_path / "missing-1.0-py3-none-any.whl"
    pyproject = PYPROJECT.replace(
        "dependencies = []", f'dependencies = ["missing @ {missing.as_uri()}"]'
    )
    commit(repo, {"pyproject.toml": pyproject})
    with pytest.raises(ReleaseError, match="pip install failed"):
        prep(repo, releases_dir)
    envs = releases_dir.parent / "envs"
    assert not any(p.name != ".meta" for p in envs.iterdir())


def test_a_lock_replaces_the_loose_requirements_and_its_bytes_name_the_env(
    tmp_path: Path,
) -> None:
    d = tmp_path / "app"
    d.mkdir()
    (d / "pyproject.toml").write_text(PYPROJECT.replace("[]", '["attrs>=20"]'))
    loose = deps_spec(d, sys.executable)
    assert loose.requirements == ("attrs>=20",) and loose.lock is None
    (d / "requirements.lock").write_text("attrs==23.1.0 --hash=sha256:" + "a" * 64 + "\n")
    locked = deps_spec(d, sys.executable)
    # Only the lock is installed: lower bounds would give other versions next month.
    assert locked.lock == d / "requirements.lock" and locked.requirements == ()
    assert locked.hash != loose.hash
    (d / "requirements.lock").write_text("attrs==23.2.0 --hash=sha256:" + "b" * 64 + "\n")
    assert deps_spec(d, sys.executable).hash != locked.hash


def test_the_repository_releases_install_the_run_time_part_of_its_lock() -> None:
    repo_root = Path(__file__).resolve().parents[2]
    spec = deps_spec(repo_root, sys.executable)
    assert spec.lock == repo_root / "requirements.lock" and spec.requirements == ()
    runtime = runtime_lock(spec.lock.read_text(), spec.lock_roots)
    pinned = {requirement_name(line) for line in runtime.splitlines() if line[:1].isalpha()}
    # The app and what its dependencies pull in (uvicorn[standard] -> uvloop) ...
    assert {"fastapi", "uvicorn", "uvloop", "starlette", "asyncpg"} <= pinned
    # ... not the development tools, and every entry keeps its hashes.
    assert not pinned & {"pytest", "mypy", "ruff", "playwright", "schemathesis", "uv"}
    blocks = re.split(r"\n(?=[a-z])", runtime.strip())
    assert len(blocks) == len(pinned) and all("--hash=sha256:" in b for b in blocks)


LOCK = """\
app-dep==1.0 \\
    --hash=sha256:aaa
    # via clinic (pyproject.toml)
sub-dep==2.0 \\
    --hash=sha256:bbb
    # via
    #   app-dep
    #   dev-tool
dev-tool==3.0 \\
    --hash=sha256:ccc
    # via clinic (pyproject.toml)
dev-only==4.0 \\
    --hash=sha256:ddd
    # via dev-tool
"""


def test_the_run_time_lock_is_the_closure_of_the_dependencies() -> None:
    runtime = runtime_lock(LOCK, ["App_Dep>=1"])
    assert runtime.splitlines()[0] == "app-dep==1.0 \\"
    names = [line.split("==")[0] for line in runtime.splitlines() if line[:1].isalpha()]
    assert names == ["app-dep", "sub-dep"]
    assert "--hash=sha256:aaa" in runtime and "--hash=sha256:bbb" in runtime
    # No roots, or a lock without annotations: all of it (nothing can be left out safely).
    assert runtime_lock(LOCK, []) == LOCK
    plain = "a==1 --hash=sha256:x\nb==2 --hash=sha256:y\n"
    assert runtime_lock(plain, ["a"]) == plain


def wheel_sha256(wheel: Path) -> str:
    import hashlib

    return hashlib.sha256(wheel.read_bytes()).hexdigest()


@pytest.mark.slow
def test_the_env_is_installed_from_the_lock_with_hashes_checked(
    repo: Path, releases_dir: Path, tmp_path: Path
) -> None:
    wheel = make_wheel(tmp_path, "from-lock")
    # pyproject names a version that does not exist anywhere: only the lock is installed.
    pyproject = PYPROJECT.replace("dependencies = []", 'dependencies = ["tinydep>=99"]')
    lock = f"tinydep @ {wheel.as_uri()} --hash=sha256:{wheel_sha256(wheel)}\n"
    commit(repo, {"pyproject.toml": pyproject, "requirements.lock": lock})
    logs: list[str] = []
    rel = prep(repo, releases_dir, logs)
    assert run_in_release(rel, "import tinydep; print(tinydep.VALUE)") == "from-lock"
    assert any("requirements.lock" in line for line in logs)
    # A lock whose hash does not match the file is refused by pip, and nothing is kept.
    commit(repo, {"requirements.lock": lock.replace(wheel_sha256(wheel), "0" * 64)})
    with pytest.raises(ReleaseError, match="pip install failed"):
        prep(repo, releases_dir)
    assert [p.name for p in (releases_dir.parent / "envs").iterdir() if p.name != ".meta"] == [
        rel.venv.name
    ]
