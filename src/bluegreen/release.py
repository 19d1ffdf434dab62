"""Materialise a release: its code in ``<releases_dir>/<id>``, its dependencies in a venv.

Scheme (fast when dependencies do not change):

* **Code.** From git, ``git archive <commit>`` is extracted into
  ``<releases_dir>/<id>`` with ``id`` = the 12-hex short commit hash, so
  uncommitted changes are never deployed. From a path, the directory is copied
  (without ``.git``, ``.venv``, ``var``, ``__pycache__``, ``*.egg-info``) and
  ``id`` = ``"p"`` + 12 hex of a sha256 over the sorted relative paths and bytes,
  so the same content gives the same id. A release dir that already exists is
  reused as is (its id names its content). Directories appear atomically
  (extracted to a hidden temp dir, then renamed).
* **Dependencies.** The *deps hash* is a sha256 of the interpreter version,
  ``[project] dependencies``, ``optional-dependencies`` and ``requires-python``
  from the release's ``pyproject.toml`` (the whole file's bytes if it has no
  ``[project]`` table), every ``requirements*.txt`` and ``requirements.lock``. The venv
  ``<releases_dir>/../envs/<deps_hash>`` holds the dependencies only. With a
  ``requirements.lock`` (what ``make install`` installs) its run-time part is installed
  (the closure of ``[project] dependencies``, :mod:`bluegreen.lockfile`) with
  ``pip install --require-hashes``: the versions CI tested, each file checked against its
  hash; otherwise ``[project] dependencies`` plus
  ``requirements.txt`` (optional dependencies are hashed but not installed). It is
  complete once its marker file exists (written last); complete venvs are reused,
  incomplete ones rebuilt. With no dependencies the
  venv is made ``--without-pip`` and pip never runs.
* **Running.** The release's own code is not installed: it runs from the
  release dir via ``PYTHONPATH`` (``<release>/src`` if present, else the release
  dir) with ``{python}`` = the venv's python; see :meth:`Release.env`.
* **Retention.** The ``keep`` most recently prepared releases plus the
  protected ones (live, previous) are kept; older release dirs are removed,
  then venvs no remaining release uses.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
import tomllib
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bluegreen.errors import ReleaseError
from bluegreen.lockfile import runtime_lock

Log = Callable[[str], None]

IGNORED_NAMES: frozenset[str] = frozenset({".git", ".venv", "var", ".bluegreen", "__pycache__"})
ENV_MARKER = ".bluegreen-complete"
META_DIR = ".meta"
LOCK_FILE = "requirements.lock"
RUNTIME_LOCK = "requirements.runtime.lock"
"""Written into the venv: the lock's entries the release needs at run time."""
"""Pinned, hashed requirements (``make lock``); installed instead of the loose ones."""
_TMP_PREFIX = ".tmp-"


@dataclass(frozen=True, slots=True)
class Release:
    """A release ready to run: code in ``dir``, dependencies in ``venv``."""

    id: str
    dir: Path
    python: Path
    deps_hash: str
    source: str
    venv: Path
    env_reused: bool = field(default=False, compare=False)

    @property
    def pythonpath(self) -> Path:
        """Where the release's own packages are imported from."""
        src = self.dir / "src"
        return src if src.is_dir() else self.dir

    def env(self) -> dict[str, str]:
        """Environment variables to set (over the parent's) for instances and hooks."""
        path = os.environ.get("PATH", os.defpath)
        return {
            "PYTHONPATH": str(self.pythonpath),
            "VIRTUAL_ENV": str(self.venv),
            "PATH": f"{self.venv / 'bin'}{os.pathsep}{path}",
            "BLUEGREEN_RELEASE": self.id,
        }


@dataclass(frozen=True, slots=True)
class DepsSpec:
    """What goes into a release's shared venv, and its hash."""

    hash: str
    requirements: tuple[str, ...]
    requirement_files: tuple[Path, ...]
    lock: Path | None = None
    lock_roots: tuple[str, ...] = ()
    """``[project] dependencies``: what of the lock is installed (:mod:`bluegreen.lockfile`)."""

    @property
    def empty(self) -> bool:
        """Nothing to install."""
        return not self.requirements and not self.requirement_files and self.lock is None


# --------------------------------------------------------------------------- entry point


def prepare_release(
    *,
    source_repo: Path | None = None,
    ref: str | None = None,
    path: Path | None = None,
    releases_dir: Path,
    keep: int,
    python: str,
    log: Log,
    protect: Collection[str] = (),
) -> Release:
    """Materialise a release from ``ref`` of ``source_repo`` (default ``HEAD``) or ``path``.

    Then apply retention (keeping ``protect`` and the new release). Raises
    :class:`ReleaseError` with the failing command's output.
    """
    if path is not None and ref is not None:
        raise ReleaseError("give either a git ref or a path to deploy, not both")
    releases_dir = releases_dir.resolve()
    releases_dir.mkdir(parents=True, exist_ok=True)
    envs_dir = releases_dir.parent / "envs"
    envs_dir.mkdir(parents=True, exist_ok=True)

    if path is not None:
        release_id, rdir = _materialise_path(path.resolve(), releases_dir, envs_dir, log)
        source = str(path.resolve())
    else:
        if source_repo is None:
            raise ReleaseError("a git ref needs the source repository (source_repo)")
        ref = ref or "HEAD"
        release_id, rdir = _materialise_ref(source_repo, ref, releases_dir, log)
        source = ref

    deps = deps_spec(rdir, python)
    venv, reused = ensure_env(deps, rdir, envs_dir, python=python, log=log)
    _write_meta(releases_dir, release_id, source=source, deps_hash=deps.hash)
    prune_releases(releases_dir, keep=keep, protect={*protect, release_id}, log=log)
    return Release(
        id=release_id,
        dir=rdir,
        python=venv / "bin" / "python",
        deps_hash=deps.hash,
        source=source,
        venv=venv,
        env_reused=reused,
    )


# --------------------------------------------------------------------------- code


def _run(argv: list[str], what: str, cwd: Path | None = None) -> str:
    try:
        proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)
    except OSError as exc:
        raise ReleaseError(f"{what}: cannot run {argv[0]}: {exc}") from None
    if proc.returncode != 0:
        raise ReleaseError(f"{what} failed (exit {proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout.strip()


def _materialise_ref(repo: Path, ref: str, releases_dir: Path, log: Log) -> tuple[str, Path]:
    what = f"resolving git ref {ref!r} in {repo}"
    sha = _run(
        ["git", "-C", str(repo), "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"], what
    )
    release_id = _run(["git", "-C", str(repo), "rev-parse", "--short=12", sha], what)
    rdir = releases_dir / release_id
    if rdir.is_dir():
        log(f"release {release_id}: already materialised ({ref} = {sha[:12]})")
        return release_id, rdir
    tmp = Path(tempfile.mkdtemp(prefix=_TMP_PREFIX, dir=releases_dir))
    try:
        with tempfile.TemporaryFile() as err:
            proc = subprocess.Popen(
                ["git", "-C", str(repo), "archive", "--format=tar", sha],
                stdout=subprocess.PIPE,
                stderr=err,
            )
            assert proc.stdout is not None
            try:
                with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
                    if hasattr(tarfile, "data_filter"):
                        tar.extractall(tmp, filter="data")
                    else:  # pragma: no cover - Python < 3.11.4
                        tar.extractall(tmp)  # noqa: S202 - our own git archive
            finally:
                proc.stdout.close()
                rc = proc.wait()
            if rc != 0:
                err.seek(0)
                raise ReleaseError(
                    f"git archive {sha[:12]} failed (exit {rc}): {err.read().decode().strip()}"
                )
        tmp.rename(rdir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log(f"release {release_id}: extracted {ref} ({sha[:12]}) into {rdir}")
    return release_id, rdir


def _ignore_for(excluded: Iterable[Path]) -> Callable[[str, list[str]], set[str]]:
    skipped = {p.resolve() for p in excluded}

    def ignore(directory: str, names: list[str]) -> set[str]:
        skip = {n for n in names if n in IGNORED_NAMES or n.endswith(".egg-info")}
        base = Path(directory).resolve()
        skip.update(n for n in names if (base / n) in skipped)
        return skip

    return ignore


def content_hash(root: Path) -> str:
    """sha256 (hex) over the sorted relative paths and bytes of the files under ``root``."""
    h = hashlib.sha256()
    files: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in [*filenames, *(d for d in dirnames if (Path(dirpath) / d).is_symlink())]:
            p = Path(dirpath) / name
            files.append((p.relative_to(root).as_posix(), p))
    for rel, p in sorted(files):
        h.update(rel.encode() + b"\0")
        if p.is_symlink():
            h.update(b"L" + os.readlink(p).encode() + b"\0")
        else:
            data = p.read_bytes()
            h.update(b"F" + str(len(data)).encode() + b"\0" + data)
    return h.hexdigest()


def _materialise_path(src: Path, releases_dir: Path, envs_dir: Path, log: Log) -> tuple[str, Path]:
    if not src.is_dir():
        raise ReleaseError(f"{src}: not a directory; give the directory of the app to deploy")
    tmp = Path(tempfile.mkdtemp(prefix=_TMP_PREFIX, dir=releases_dir))
    try:
        dest = tmp / "tree"
        shutil.copytree(src, dest, symlinks=True, ignore=_ignore_for([releases_dir, envs_dir, tmp]))
        release_id = "p" + content_hash(dest)[:12]
        rdir = releases_dir / release_id
        if rdir.is_dir():
            log(f"release {release_id}: same content already materialised")
        else:
            dest.rename(rdir)
            log(f"release {release_id}: copied {src} into {rdir}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return release_id, rdir


# --------------------------------------------------------------------------- dependencies


def _interpreter_id(python: str) -> str:
    out = _run(
        [python, "-c", "import sys; print(sys.version); print(sys.base_prefix)"],
        f"checking interpreter {python}",
    )
    return out


def deps_spec(release_dir: Path, python: str) -> DepsSpec:
    """Read the release's dependency declarations and hash them (with the interpreter)."""
    h = hashlib.sha256()
    h.update(b"python\0" + _interpreter_id(python).encode() + b"\0")
    requirements: list[str] = []
    pyproject = release_dir / "pyproject.toml"
    if pyproject.is_file():
        raw = pyproject.read_bytes()
        try:
            data = tomllib.loads(raw.decode("utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ReleaseError(f"{pyproject}: invalid TOML: {exc}") from None
        project = data.get("project")
        if isinstance(project, dict):
            requirements = _str_list(project.get("dependencies", []), pyproject)
            declared: dict[str, Any] = {
                "dependencies": requirements,
                "optional-dependencies": project.get("optional-dependencies", {}),
                "requires-python": project.get("requires-python"),
            }
            h.update(b"project\0" + json.dumps(declared, sort_keys=True).encode() + b"\0")
        else:
            h.update(b"pyproject-bytes\0" + raw + b"\0")
    req_files = sorted(release_dir.glob("requirements*.txt"))
    for f in req_files:
        h.update(f"file\0{f.name}\0".encode() + f.read_bytes() + b"\0")
    lock = release_dir / LOCK_FILE
    if lock.is_file():
        h.update(b"lock\0" + lock.read_bytes() + b"\0")
        return DepsSpec(
            hash=h.hexdigest()[:16],
            requirements=(),
            requirement_files=(),
            lock=lock,
            lock_roots=tuple(requirements),
        )
    main_req = release_dir / "requirements.txt"
    return DepsSpec(
        hash=h.hexdigest()[:16],
        requirements=tuple(requirements),
        requirement_files=(main_req,) if main_req.is_file() else (),
    )


def _str_list(value: object, where: Path) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ReleaseError(f"{where}: [project] dependencies must be an array of strings")
    return [str(v) for v in value]


def ensure_env(
    deps: DepsSpec, release_dir: Path, envs_dir: Path, *, python: str, log: Log
) -> tuple[Path, bool]:
    """The complete venv for ``deps`` (creating it if needed) and whether it was reused."""
    venv = envs_dir / deps.hash
    if (venv / ENV_MARKER).is_file():
        log(f"environment {deps.hash}: reused")
        return venv, True
    if venv.exists():
        log(f"environment {deps.hash}: incomplete, rebuilding")
        shutil.rmtree(venv)
    what = LOCK_FILE if deps.lock is not None else f"{len(deps.requirements)} requirements"
    log(f"environment {deps.hash}: creating ({what})")
    try:
        argv = [python, "-m", "venv"]
        if deps.empty:
            argv.append("--without-pip")
        _stream([*argv, str(venv)], cwd=release_dir, log=log, what="creating the venv")
        if not deps.empty:
            pip = [
                str(venv / "bin" / "python"),
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "--no-input",
            ]
            if deps.lock is not None:
                # As `make install`: every package pinned and its file's hash checked; only
                # what the release runs with, not the lock's development tools.
                runtime = venv / RUNTIME_LOCK
                runtime.write_text(
                    runtime_lock(deps.lock.read_text(encoding="utf-8"), deps.lock_roots),
                    encoding="utf-8",
                )
                pip += ["--require-hashes", "-r", str(runtime)]
            for f in deps.requirement_files:
                pip += ["-r", str(f)]
            _stream([*pip, *deps.requirements], cwd=release_dir, log=log, what="pip install")
        (venv / ENV_MARKER).write_text(
            json.dumps({"requirements": list(deps.requirements), "created": time.time()})
        )
    except BaseException:
        shutil.rmtree(venv, ignore_errors=True)
        raise
    log(f"environment {deps.hash}: ready")
    return venv, False


def _stream(argv: list[str], *, cwd: Path, log: Log, what: str) -> None:
    tail: list[str] = []
    try:
        proc = subprocess.Popen(
            argv,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
        )
    except OSError as exc:
        raise ReleaseError(f"{what}: cannot run {argv[0]}: {exc}") from None
    assert proc.stdout is not None
    with proc.stdout:
        for line in proc.stdout:
            line = line.rstrip("\n")
            log(line)
            tail = [*tail[-29:], line]
    rc = proc.wait()
    if rc != 0:
        joined = "\n".join(tail)
        raise ReleaseError(f"{what} failed (exit {rc}):\n{joined}")


# --------------------------------------------------------------------------- retention


def _write_meta(releases_dir: Path, release_id: str, *, source: str, deps_hash: str) -> None:
    meta_dir = releases_dir / META_DIR
    meta_dir.mkdir(exist_ok=True)
    tmp = meta_dir / f".{release_id}.json.tmp"
    tmp.write_text(
        json.dumps(
            {
                "id": release_id,
                "source": source,
                "deps_hash": deps_hash,
                "prepared_ns": time.time_ns(),
            }
        )
    )
    tmp.replace(meta_dir / f"{release_id}.json")


def _read_meta(releases_dir: Path, release_id: str) -> dict[str, Any] | None:
    try:
        data = json.loads((releases_dir / META_DIR / f"{release_id}.json").read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def list_releases(releases_dir: Path) -> list[str]:
    """Release ids present on disk, most recently prepared first."""
    if not releases_dir.is_dir():
        return []
    ids = [p.name for p in releases_dir.iterdir() if p.is_dir() and not p.name.startswith(".")]

    def prepared(rid: str) -> int:
        meta = _read_meta(releases_dir, rid)
        if meta is not None and isinstance(meta.get("prepared_ns"), int):
            return int(meta["prepared_ns"])
        return (releases_dir / rid).stat().st_mtime_ns

    return sorted(ids, key=prepared, reverse=True)


def prune_releases(
    releases_dir: Path, *, keep: int, protect: Collection[str], log: Log
) -> list[str]:
    """Remove all but the newest ``keep`` releases and ``protect``; then unused venvs.

    Returns the removed release ids. A venv is only removed when every remaining
    release's deps hash is known.
    """
    releases_dir = releases_dir.resolve()
    envs_dir = releases_dir.parent / "envs"
    ordered = list_releases(releases_dir)
    kept = set(ordered[:keep]) | (set(protect) & set(ordered))
    removed: list[str] = []
    for rid in ordered:
        if rid in kept:
            continue
        shutil.rmtree(releases_dir / rid, ignore_errors=True)
        (releases_dir / META_DIR / f"{rid}.json").unlink(missing_ok=True)
        removed.append(rid)
        log(f"release {rid}: removed (retention keeps {keep})")
    for stale in releases_dir.glob(f"{_TMP_PREFIX}*"):
        shutil.rmtree(stale, ignore_errors=True)

    used: set[str] = set()
    for rid in kept:
        meta = _read_meta(releases_dir, rid)
        if meta is None or not isinstance(meta.get("deps_hash"), str):
            return removed  # unknown deps: keep every venv
        used.add(meta["deps_hash"])
    if envs_dir.is_dir():
        for env in envs_dir.iterdir():
            if env.is_dir() and env.name not in used:
                shutil.rmtree(env, ignore_errors=True)
                log(f"environment {env.name}: removed (no release uses it)")
    return removed
