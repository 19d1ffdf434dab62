"""``bluegreen.toml`` -> Kubernetes objects for Argo Rollouts (pure: no I/O, no clock).

:func:`render` returns plain dicts, one per object, in apply order. Every command a container
runs is rendered from the same templates the one-host daemon runs (``[app].command``,
``[hooks]``), with ``{python}`` as ``python`` (the image's venv is first on ``PATH``).
Secrets are referenced by name (``secretKeyRef``), never rendered with values.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from bluegreen.config import Config, Template
from bluegreen.errors import ConfigError

Obj = dict[str, Any]

HTTP_PORT = 8080
METRICS_PORT = 9090
VENV = "/opt/venv"  # the Containerfile's layout: the venv here, the app's files in /app
APP_DIR = "/app"
LIVE_MOUNT = "/live"  # where the migration Job puts a copy of the live release
HASH_LABEL = "rollouts-pod-template-hash"
LIVE_IMAGE_ANNOTATION = "bluegreen.clinic/live-image"
UID = 10001
DEFAULT_PROMETHEUS = "http://prometheus-operated.monitoring.svc:9090"
DEFAULT_SECRET = "clinic-secrets"  # noqa: S105 (a name, not a value)
SECRET_KEYS = {  # env var -> key in the Secret
    "CLINIC_DATABASE_URL": "database-url",
    "CLINIC_SECRET_KEY": "secret-key",
    "CLINIC_SMOKE_PASSWORD": "smoke-password",
}


@dataclass(frozen=True, slots=True)
class Options:
    """What ``bluegreen.toml`` does not say: where and what to run on the cluster."""

    image: str
    namespace: str
    live_image: str | None = None
    manual: bool = False
    secret_name: str = DEFAULT_SECRET
    prometheus_url: str = DEFAULT_PROMETHEUS
    ingress_namespace: str = "ingress-nginx"
    monitoring_namespace: str = "monitoring"
    database_labels: tuple[tuple[str, str], ...] = (("app.kubernetes.io/name", "postgresql"),)
    database_port: int = 5432
    max_replicas: int | None = None
    preview_replicas: int | None = None
    lock_timeout: str = "5s"
    worker_replicas: int = 2

    @property
    def release(self) -> str:
        """The release id: the image's tag (or digest), as ``CLINIC_RELEASE_ID``."""
        name = self.image.rsplit("/", 1)[-1]
        if "@" in name:
            return name.split("@", 1)[1].replace("sha256:", "")[:12]
        return name.split(":", 1)[1] if ":" in name else "latest"


@dataclass(frozen=True, slots=True)
class Names:
    app: str

    @property
    def web(self) -> str:
        return self.app

    @property
    def active(self) -> str:
        return f"{self.app}-active"

    @property
    def preview(self) -> str:
        return f"{self.app}-preview"

    @property
    def worker(self) -> str:
        return f"{self.app}-worker"

    @property
    def pre(self) -> str:
        return f"{self.app}-pre-promotion"

    @property
    def post(self) -> str:
        return f"{self.app}-post-promotion"

    def migrate(self, release: str) -> str:
        slug = re.sub(r"[^a-z0-9-]+", "-", release.lower()).strip("-")[:30].strip("-")
        return f"{self.app}-migrate-{slug or 'latest'}"


def k8s_name(name: str) -> str:
    if not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name) or len(name) > 40:
        raise ConfigError(
            f"app.name: {name!r} must be a DNS label of at most 40 characters for Kubernetes"
            " (lowercase letters, digits, '-')"
        )
    return name


def labels(names: Names, component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": names.app,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": names.app,
    }


def meta(name: str, opts: Options, names: Names, component: str, **extra: Any) -> Obj:
    return {
        "name": name,
        "namespace": opts.namespace,
        "labels": {
            **labels(names, component),
            "app.kubernetes.io/managed-by": "bluegreen",
            "app.kubernetes.io/version": opts.release[:63],
        },
        **extra,
    }


def argv(template: Template, **values: object) -> list[str]:
    """A command template rendered for the image: ``{python}`` is the venv's ``python``."""
    base: dict[str, object] = {"python": "python", "release_dir": APP_DIR, "colour": "-"}
    return template.render(**(base | values))


def serve_argv(config: Config) -> list[str]:
    """``[app].command`` on :data:`HTTP_PORT`, listening on every address of the pod (the
    kubelet and the Services reach the pod IP, not its loopback)."""
    args = argv(config.app.command, port=HTTP_PORT, release="-")
    for i, arg in enumerate(args[:-1]):
        if arg == "--host":
            args[i + 1] = "0.0.0.0"
    return args


def app_env(config: Config, opts: Options, *, secrets: tuple[str, ...]) -> list[Obj]:
    """The environment every clinic container gets: settings, then secrets by reference."""
    env: dict[str, str] = {
        "CLINIC_ENVIRONMENT": "production",
        "CLINIC_RELEASE_ID": opts.release,
        "CLINIC_VAR_DIR": f"{APP_DIR}/var",
        "CLINIC_WORKER_IN_PROCESS": "false",  # the worker Deployment does the jobs
        "CLINIC_MIGRATION_LOCK_TIMEOUT": opts.lock_timeout,
        **dict(config.app.env),
    }
    out: list[Obj] = [{"name": k, "value": v} for k, v in env.items()]
    out += [
        {
            "name": var,
            "valueFrom": {"secretKeyRef": {"name": opts.secret_name, "key": SECRET_KEYS[var]}},
        }
        for var in secrets
    ]
    return out


def container_security() -> Obj:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }


def pod_security() -> Obj:
    return {
        "runAsNonRoot": True,
        "runAsUser": UID,
        "runAsGroup": UID,
        "fsGroup": UID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def scratch_volumes(*extra: str) -> tuple[list[Obj], list[Obj]]:
    """Writable emptyDirs (the root filesystem is read-only): ``var`` (state, logs), ``tmp``."""
    mounts = {"var": f"{APP_DIR}/var", "tmp": "/tmp", **{e: f"/{e}" for e in extra}}  # noqa: S108
    volumes = [{"name": n, "emptyDir": {}} for n in mounts]
    return volumes, [{"name": n, "mountPath": p} for n, p in mounts.items()]


def resources(cpu: str, memory: str, cpu_limit: str, memory_limit: str) -> Obj:
    return {
        "requests": {"cpu": cpu, "memory": memory},
        "limits": {"cpu": cpu_limit, "memory": memory_limit},
    }


def seconds(value: float) -> int:
    return max(1, math.ceil(value))


def web_container(config: Config, opts: Options) -> Obj:
    app, t = config.app, config.timeouts
    _, mounts = scratch_volumes()
    colour = {"fieldRef": {"fieldPath": f"metadata.labels['{HASH_LABEL}']"}}
    env = app_env(config, opts, secrets=("CLINIC_DATABASE_URL", "CLINIC_SECRET_KEY"))
    env += [
        # The pod template hash is the colour (Argo's two ReplicaSets): metrics carry it.
        {"name": "BLUEGREEN_COLOR", "valueFrom": colour},
        {"name": "CLINIC_METRICS_HOST", "value": "0.0.0.0"},
        {"name": "CLINIC_METRICS_PORT", "value": str(METRICS_PORT)},
    ]

    def probe(path: str, period: int, failures: int) -> Obj:
        return {
            "httpGet": {"path": path, "port": "http"},
            "periodSeconds": period,
            "timeoutSeconds": 3,
            "failureThreshold": failures,
        }

    return {
        "name": "web",
        "image": opts.image,
        "command": serve_argv(config),
        "ports": [
            {"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"},
            {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"},
        ],
        "env": env,
        "startupProbe": probe(app.live_path, 2, max(1, seconds(t.start) // 2)),
        "livenessProbe": probe(app.live_path, 10, 3),
        "readinessProbe": probe(app.ready_path, 5, 2),
        "resources": resources("250m", "256Mi", "1", "512Mi"),
        "securityContext": container_security(),
        "volumeMounts": mounts,
    }


def rollout(config: Config, opts: Options, names: Names) -> Obj:
    replicas = max(config.replicas.blue, config.replicas.green)
    volumes, _ = scratch_volumes()
    pod_labels = labels(names, "web")
    blue_green: Obj = {
        "activeService": names.active,
        "previewService": names.preview,
        "autoPromotionEnabled": not opts.manual,
        "scaleDownDelaySeconds": int(config.timeouts.scale_down_delay),
        "previewReplicaCount": opts.preview_replicas or replicas,
        # Prefer nodes that do not run the other colour: a bad node hurts one colour only.
        "antiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": {"weight": 100}},
        "prePromotionAnalysis": {
            "templates": [{"templateName": names.pre}],
            "args": [
                {
                    "name": "live-image",
                    "valueFrom": {
                        "fieldRef": {
                            "fieldPath": f"metadata.annotations['{LIVE_IMAGE_ANNOTATION}']"
                        }
                    },
                }
            ],
        },
    }
    if config.timeouts.analysis_window > 0:
        blue_green["postPromotionAnalysis"] = {
            "templates": [{"templateName": names.post}],
            "args": [
                {"name": "new-hash", "valueFrom": {"podTemplateHashValue": "Latest"}},
                {"name": "old-hash", "valueFrom": {"podTemplateHashValue": "Stable"}},
            ],
        }
    spread = {  # the replicas of one colour (one pod template hash) over different nodes
        "weight": 100,
        "podAffinityTerm": {
            "topologyKey": "kubernetes.io/hostname",
            "labelSelector": {"matchLabels": pod_labels},
            "matchLabelKeys": [HASH_LABEL],
        },
    }
    live_image = opts.live_image or opts.image
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Rollout",
        "metadata": meta(
            names.web, opts, names, "web", annotations={LIVE_IMAGE_ANNOTATION: live_image}
        ),
        "spec": {
            "replicas": replicas,
            "revisionHistoryLimit": config.releases.keep,
            "selector": {"matchLabels": pod_labels},
            "template": {
                "metadata": {
                    "labels": pod_labels,
                    "annotations": {
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": str(METRICS_PORT),
                        "prometheus.io/path": "/metrics",
                    },
                },
                "spec": {
                    "automountServiceAccountToken": False,
                    "securityContext": pod_security(),
                    "terminationGracePeriodSeconds": seconds(config.timeouts.drain) + 10,
                    "affinity": {
                        "podAntiAffinity": {
                            "preferredDuringSchedulingIgnoredDuringExecution": [spread]
                        }
                    },
                    "containers": [web_container(config, opts)],
                    "volumes": volumes,
                },
            },
            "strategy": {"blueGreen": blue_green},
        },
    }
