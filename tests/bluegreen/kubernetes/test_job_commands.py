"""The rendered containers' command lines, run as processes against the embedded PostgreSQL,
exactly as the manifests give them (argv and env from the rendered objects). What a cluster
would provide is provided the way it would: the Secret's values as env, the image's /app and
the emptyDir mounts as directories, the Services' names as addresses, the pod template hash
as the downward API would set it."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text

from bluegreen.config import load_config
from bluegreen.kubernetes.manifests import Options
from bluegreen.kubernetes.operations import render
from clinic.core.embedded import EmbeddedPostgres

REPO = Path(__file__).resolve().parents[3]
VENV_BIN = Path(os.environ.get("VIRTUAL_ENV", REPO / ".venv")) / "bin"
SECRETS = {
    "CLINIC_SECRET_KEY": "k8s-test-secret-key-0123456789",
    "CLINIC_SMOKE_PASSWORD": "k8s-smoke-password-4711",
}
POD_HASH = "6d8f9c7b5"
PORTS = iter(range(24100, 24999))  # this suite's port range

pytestmark = pytest.mark.slow


def free_port() -> int:
    import socket

    for port in PORTS:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 24100-24999")


class Pod:
    """Where a rendered container runs here: mount paths mapped to directories."""

    def __init__(self, root: Path, database_url: str) -> None:
        self.mounts = {"/app": root / "app", "/live": root / "live", "/tmp": root / "tmp"}
        self.database_url = database_url
        self.services: dict[str, str] = {}
        app = self.mounts["/app"]
        app.mkdir(parents=True)
        for name in ("bluegreen.toml", ".squawk.toml"):  # what the Containerfile copies
            shutil.copy(REPO / name, app / name)
        (app / "var").mkdir()
        self.mounts["/tmp"].mkdir()
        # `cp -a /opt/venv /app /live/` in the live image: its venv and files.
        self.mounts["/live"].mkdir()
        shutil.copytree(app, self.mounts["/live"] / "app")
        (self.mounts["/live"] / "venv").symlink_to(VENV_BIN.parent)

    def path(self, value: str) -> str:
        for mount, here in sorted(self.mounts.items(), reverse=True):
            if value == mount or value.startswith(mount + "/"):
                return str(here) + value[len(mount) :]
        for name, url in self.services.items():
            value = re.sub(rf"^http://{re.escape(name)}$", url, value)
        return value

    def env(self, container: dict[str, Any], **extra: str) -> dict[str, str]:
        env = {
            "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}",
            "HOME": str(self.mounts["/tmp"]),
        }
        secrets = {**SECRETS, "CLINIC_DATABASE_URL": self.database_url}
        for var in container.get("env", []):
            if "value" in var:
                env[var["name"]] = self.path(var["value"])
            elif "secretKeyRef" in var["valueFrom"]:
                env[var["name"]] = secrets[var["name"]]
            else:  # the downward API: the pod template hash label
                env[var["name"]] = POD_HASH
        return {**env, **extra}

    def argv(self, container: dict[str, Any]) -> list[str]:
        return [self.path(a) for a in container["command"]]

    def run(
        self, container: dict[str, Any], timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.argv(container),
            cwd=self.mounts["/app"],
            env=self.env(container),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


@pytest.fixture
def live_database(pg: EmbeddedPostgres, tmp_path: Path) -> Iterator[str]:
    """The live database one release behind: its smoke accounts, the schema one migration short
    of head, so the migration Job has a migration to check, rehearse and run."""
    name = f"k8s_{uuid.uuid4().hex[:10]}"
    admin = create_engine(pg.url().replace("postgresql://", "postgresql+psycopg://", 1))
    with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = pg.url(name)
    env = {**os.environ, **SECRETS, "CLINIC_DATABASE_URL": url, "CLINIC_VAR_DIR": str(tmp_path)}
    for args in (["upgrade", "--seed-smoke"], ["downgrade", "--", "-1"]):
        done = subprocess.run(
            [str(VENV_BIN / "python"), "-m", "clinic", "db", *args],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stderr
    yield url
    with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        left = conn.execute(
            text("SELECT datname FROM pg_database WHERE datname LIKE :p"),
            {"p": f"{name}_rehearsal_%"},
        ).all()
    admin.dispose()
    assert left == [], "the rehearsal left a scratch database behind"


def objects(live_image: str | None = "registry.example/clinic:1.3") -> list[dict[str, Any]]:
    config = load_config(REPO / "bluegreen.toml", environ={})
    opts = Options(image="registry.example/clinic:1.4", namespace="clinic", live_image=live_image)
    return render(config, opts)


def containers(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    spec = obj["spec"]["template"]["spec"]
    return {c["name"]: c for c in [*spec.get("initContainers", []), *spec["containers"]]}


def test_the_migration_job_lints_rehearses_then_migrates(
    live_database: str, tmp_path: Path
) -> None:
    (job,) = [o for o in objects() if o["kind"] == "Job"]
    steps = containers(job)
    assert list(steps) == ["copy-live-release", "lint", "rehearse", "migrate"]
    pod = Pod(tmp_path, live_database)
    lint = pod.run(steps["lint"])
    assert lint.returncode == 0, lint.stdout + lint.stderr
    assert "clean" in lint.stdout
    rehearse = pod.run(steps["rehearse"])
    assert rehearse.returncode == 0, rehearse.stdout + rehearse.stderr
    assert "new release's migrations applied to the scratch database" in rehearse.stdout
    assert "live release 1.3 passed its smoke test on the new schema" in rehearse.stdout
    migrate = pod.run(steps["migrate"])
    assert migrate.returncode == 0, migrate.stdout + migrate.stderr
    assert "database at head" in migrate.stdout
    again = pod.run(steps["lint"])  # nothing left to run: still clean
    assert again.returncode == 0 and "migrations checked: none" in again.stdout


def test_without_a_live_image_the_rehearsal_only_tries_the_migrations(
    live_database: str, tmp_path: Path
) -> None:
    (job,) = [o for o in objects(live_image=None) if o["kind"] == "Job"]
    steps = containers(job)
    assert "copy-live-release" not in steps
    rehearse = Pod(tmp_path, live_database).run(steps["rehearse"])
    assert rehearse.returncode == 0, rehearse.stdout + rehearse.stderr
    assert "only the migrations were rehearsed" in rehearse.stdout


def test_a_broken_database_url_fails_the_rehearsal_clearly(tmp_path: Path) -> None:
    (job,) = [o for o in objects() if o["kind"] == "Job"]
    pod = Pod(tmp_path, "postgresql://nobody@127.0.0.1:1/none")
    rehearse = pod.run(containers(job)["rehearse"], timeout=120)
    assert rehearse.returncode == 1
    assert "rehearsal failed" in rehearse.stderr or "error:" in rehearse.stderr


def wait_ready(url: str, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the web container exited"
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{url} not ready")


def test_web_serves_and_the_analysis_smoke_jobs_pass_and_are_measured(
    live_database: str, tmp_path: Path
) -> None:
    rendered = objects()
    (job,) = [o for o in rendered if o["kind"] == "Job"]
    pod = Pod(tmp_path, live_database)
    assert pod.run(containers(job)["migrate"]).returncode == 0
    (rollout,) = [o for o in rendered if o["kind"] == "Rollout"]
    (web,) = rollout["spec"]["template"]["spec"]["containers"]
    port, metrics_port = free_port(), free_port()
    argv = pod.argv(web)
    assert argv[argv.index("--port") + 1] == "8080" and argv[argv.index("--host") + 1] == "0.0.0.0"
    argv[argv.index("--port") + 1], argv[argv.index("--host") + 1] = str(port), "127.0.0.1"
    env = pod.env(web, CLINIC_METRICS_PORT=str(metrics_port), CLINIC_METRICS_HOST="127.0.0.1")
    proc = subprocess.Popen(argv, cwd=pod.mounts["/app"], env=env, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_ready(base + web["readinessProbe"]["httpGet"]["path"], proc)
        assert httpx.get(base + web["livenessProbe"]["httpGet"]["path"]).status_code == 200
        # One pod answers for both Services here (a cluster has two ReplicaSets).
        pod.services = {"clinic-preview": base, "clinic-active": base}
        (pre,) = [o for o in rendered if o["metadata"]["name"] == "clinic-pre-promotion"]
        job_spec = pre["spec"]["metrics"][0]["provider"]["job"]["spec"]
        for name, smoke in containers({"spec": job_spec}).items():
            result = pod.run(smoke, timeout=120)
            assert result.returncode == 0, f"{name}: {result.stdout}{result.stderr}"
        scraped = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics").text
        assert f'colour="{POD_HASH}"' in scraped and 'release="1.4"' in scraped
        assert not re.search(r'status_class="5xx"[^\n]*\} [1-9]', scraped)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0


def test_the_worker_drains_and_exits_on_sigterm(live_database: str, tmp_path: Path) -> None:
    rendered = objects()
    (job,) = [o for o in rendered if o["kind"] == "Job"]
    pod = Pod(tmp_path, live_database)
    assert pod.run(containers(job)["migrate"]).returncode == 0
    (worker,) = [o for o in rendered if o["kind"] == "Deployment"]
    (container,) = worker["spec"]["template"]["spec"]["containers"]
    proc = subprocess.Popen(
        pod.argv(container),
        cwd=pod.mounts["/app"],
        env=pod.env(container),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    try:
        line = proc.stdout.readline()
        assert "worker started" in line, line
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(
            timeout=worker["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        )
    assert proc.returncode == 0 and "worker stopped" in out
