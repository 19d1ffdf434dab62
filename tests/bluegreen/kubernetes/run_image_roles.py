"""Run a built image's three roles with podman, each exactly as the rendered manifests give its
command and environment (not part of the test suite: it needs podman and a built image).

    python tests/bluegreen/kubernetes/run_image_roles.py IMAGE DATABASE_URL [PORT]

Built here with ``podman build --isolation chroot`` on a base made from Debian packages
(``debootstrap``; no registry is reachable from these machines), see docs/kubernetes.md.
DATABASE_URL must be reachable from the host network (e.g. PostgreSQL on 127.0.0.1 over TCP).
Runs the migration Job's containers in order (copy-live-release from the same image, lint,
rehearse, migrate), then the web container (on PORT, default 24080, metrics on PORT+1), the
pre-promotion smoke containers against it, reads /metrics, then the worker and stops it with
SIGTERM. Prints one line per step; the last line is JSON.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from bluegreen.config import load_config
from bluegreen.kubernetes.manifests import Options
from bluegreen.kubernetes.operations import render

REPO = Path(__file__).resolve().parents[3]
# This machine's sandbox refuses rlimits above these and cgroup v1/v2 hybrids with crun.
PODMAN = ["podman", "--runtime", "runc"]
RUN = ["run", "--rm", "--network=host", "--ulimit", "nofile=20000:20000"]
RUN += ["--ulimit", "nproc=32768:32768"]
SECRETS = {
    "CLINIC_SECRET_KEY": "image-roles-secret-key-0123456789",
    "CLINIC_SMOKE_PASSWORD": "s" * 20,
}


def podman_args(
    container: dict[str, Any],
    secrets: dict[str, str],
    volumes: dict[str, str],
    env_over: dict[str, str],
) -> list[str]:
    args = [*RUN, "--read-only", "--user", "10001:10001", "--cap-drop", "ALL"]
    for mount in container.get("volumeMounts", []):
        args += ["-v", f"{volumes[mount['name']]}:{mount['mountPath']}"]
    for var in container.get("env", []):
        if "value" in var:
            value = env_over.get(var["name"], var["value"])
        elif "secretKeyRef" in var["valueFrom"]:
            value = secrets[var["name"]]
        else:
            value = "podhash1"
        args += ["-e", f"{var['name']}={value}"]
    return args


def run(container: dict[str, Any], image: str, env: Env, *extra: str) -> list[str]:
    """The podman argv for ``container`` (its command, ``extra`` before the image)."""
    return [*PODMAN, *podman_args(container, *env), *extra, image, *container["command"]]


Env = tuple[dict[str, str], dict[str, str], dict[str, str]]  # secrets, volumes, overrides


def migration_job(objects: list[dict[str, Any]], env: Env, results: dict[str, Any]) -> None:
    job = next(o for o in objects if o["kind"] == "Job")
    spec = job["spec"]["template"]["spec"]
    for c in [*spec["initContainers"], *spec["containers"]]:
        done = subprocess.run(run(c, c["image"], env), capture_output=True, text=True, check=False)
        last = (done.stdout.strip().splitlines() or [""])[-1]
        print(f"job {c['name']}: exit {done.returncode}: {last}")
        if done.returncode != 0:
            print(done.stdout[-2000:], done.stderr[-2000:])
        results[c["name"]] = done.returncode


def web_and_analysis(
    objects: list[dict[str, Any]], image: str, env: Env, port: int, results: dict[str, Any]
) -> None:
    rollout = next(o for o in objects if o["kind"] == "Rollout")
    web = dict(rollout["spec"]["template"]["spec"]["containers"][0])
    web["command"] = [str(port) if a == "8080" else a for a in web["command"]]
    secrets, volumes, _ = env
    web_env = (secrets, volumes, {"CLINIC_METRICS_PORT": str(port + 1)})
    server = subprocess.Popen(run(web, image, web_env, "--name", "clinic-web-roles"))
    base = f"http://127.0.0.1:{port}"
    for _ in range(120):
        try:
            with urllib.request.urlopen(base + web["readinessProbe"]["httpGet"]["path"]) as r:  # noqa: S310
                results["web-ready"] = r.status
                break
        except OSError:
            time.sleep(0.5)
    print(f"web: ready {results.get('web-ready')}")
    pre = next(o for o in objects if o["metadata"]["name"].endswith("pre-promotion"))
    job = pre["spec"]["metrics"][0]["provider"]["job"]["spec"]["template"]["spec"]
    for c in [*job["initContainers"], *job["containers"]]:
        c = {
            **c,
            "command": [re.sub(r"^http://clinic-(preview|active)$", base, a) for a in c["command"]],
        }
        done = subprocess.run(run(c, image, env), capture_output=True, text=True, check=False)
        print(f"analysis {c['name']}: exit {done.returncode}")
        results[c["name"]] = done.returncode
    with urllib.request.urlopen(f"http://127.0.0.1:{port + 1}/metrics") as r:
        text = r.read().decode()
    lines = [x for x in text.splitlines() if x.startswith("clinic_http_requests_total")]
    print(f"metrics: {len(lines)} request series, e.g. {lines[0] if lines else '-'}")
    results["metrics-series"] = len(lines)
    stop = [*PODMAN, "stop", "-t", "15", "clinic-web-roles"]
    subprocess.run(stop, capture_output=True, check=False)
    results["web-exit"] = server.wait(timeout=60)


def worker(objects: list[dict[str, Any]], env: Env, results: dict[str, Any]) -> None:
    deployment = next(o for o in objects if o["kind"] == "Deployment")
    (c,) = deployment["spec"]["template"]["spec"]["containers"]
    argv = run(c, c["image"], env, "--name", "clinic-worker-roles")
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    first = proc.stdout.readline().strip()
    stop = [*PODMAN, "stop", "-t", "30", "clinic-worker-roles"]
    subprocess.run(stop, capture_output=True, check=False)
    rest = proc.communicate(timeout=60)[0].strip().splitlines()
    print(f"worker: {first} ... {rest[-1] if rest else ''} (exit {proc.returncode})")
    results["worker-exit"] = proc.returncode


def main() -> int:
    image, url = sys.argv[1], sys.argv[2]
    port = int(sys.argv[3]) if len(sys.argv) > 3 else 24080
    config = load_config(REPO / "bluegreen.toml", environ={})
    objects = render(config, Options(image=image, namespace="clinic", live_image=image))
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        volumes = {}
        for name in ("var", "tmp", "live"):  # emptyDirs: anyone may write, like the kubelet's
            (Path(tmp) / name).mkdir(mode=0o777)
            (Path(tmp) / name).chmod(0o777)
            volumes[name] = str(Path(tmp) / name)
        env: Env = ({**SECRETS, "CLINIC_DATABASE_URL": url}, volumes, {})
        migration_job(objects, env, results)
        web_and_analysis(objects, image, env, port, results)
        worker(objects, env, results)
    print(json.dumps(results))
    return (
        0
        if not any(v for k, v in results.items() if k not in ("web-ready", "metrics-series"))
        else 1
    )


if __name__ == "__main__":
    sys.exit(main())
