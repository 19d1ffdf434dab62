"""The migration Job (lint, rehearsal, migrate) and the job worker Deployment."""

from __future__ import annotations

from pathlib import Path

from bluegreen.config import Config
from bluegreen.errors import ConfigError
from bluegreen.kubernetes.manifests import (
    APP_DIR,
    LIVE_MOUNT,
    VENV,
    Names,
    Obj,
    Options,
    app_env,
    argv,
    container_security,
    labels,
    meta,
    pod_security,
    resources,
    scratch_volumes,
    seconds,
)

MIGRATE_COMPONENT = "migrate"


def _clinic_container(config: Config, opts: Options, name: str, command: list[str]) -> Obj:
    _, mounts = scratch_volumes("live")
    return {
        "name": name,
        "image": opts.image,
        "command": command,
        "env": app_env(
            config,
            opts,
            secrets=("CLINIC_DATABASE_URL", "CLINIC_SECRET_KEY", "CLINIC_SMOKE_PASSWORD"),
        ),
        "resources": resources("250m", "256Mi", "1", "768Mi"),
        "securityContext": container_security(),
        "volumeMounts": mounts,
    }


def rehearse_argv(opts: Options) -> list[str]:
    """``bluegreen rehearse``, with the copy of the live release when there is one."""
    if opts.live_image is None:
        return ["bluegreen", "rehearse"]
    return [
        "bluegreen",
        "rehearse",
        "--live-dir",
        f"{LIVE_MOUNT}/{Path(APP_DIR).name}",  # where `cp -a VENV APP_DIR LIVE_MOUNT/` puts them
        "--live-python",
        f"{LIVE_MOUNT}/{Path(VENV).name}/bin/python",
        "--live-release",
        opts.live_image.rsplit(":", 1)[-1] if ":" in opts.live_image else "live",
    ]


def migration_job(config: Config, opts: Options, names: Names) -> Obj:
    """Runs before the Rollout changes: an Argo CD PreSync hook, and a plain Job for
    ``kubectl apply`` (named per release, as a Job's pod template cannot change).

    Steps, one after the other (init containers stop the pod at the first failure):
    ``copy-live-release`` (the live image copies its venv and app files into an emptyDir, so
    the new image can run the live release), ``lint``, ``rehearse`` (scratch database), then
    ``migrate`` under ``CLINIC_MIGRATION_LOCK_TIMEOUT``."""
    if config.migrations is None or config.hooks.migrate is None:
        raise ConfigError("migrations/hooks.migrate: the migration Job needs both configured")
    volumes, mounts = scratch_volumes("live")
    init: list[Obj] = []
    if opts.live_image is not None:
        init.append(
            {
                "name": "copy-live-release",
                "image": opts.live_image,
                "command": ["cp", "-a", VENV, APP_DIR, f"{LIVE_MOUNT}/"],
                "resources": resources("100m", "64Mi", "500m", "256Mi"),
                "securityContext": container_security(),
                "volumeMounts": [m for m in mounts if m["name"] == "live"],
            }
        )
    init.append(_clinic_container(config, opts, "lint", ["bluegreen", "lint-migrations"]))
    init.append(_clinic_container(config, opts, "rehearse", rehearse_argv(opts)))
    migrate = _clinic_container(
        config, opts, "migrate", argv(config.hooks.migrate, release=opts.release)
    )
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": meta(
            names.migrate(opts.release),
            opts,
            names,
            MIGRATE_COMPONENT,
            annotations={
                "argocd.argoproj.io/hook": "PreSync",
                "argocd.argoproj.io/hook-delete-policy": "BeforeHookCreation",
            },
        ),
        "spec": {
            "backoffLimit": 0,  # a failed migration is looked at, not retried blindly
            "activeDeadlineSeconds": 4 * seconds(config.timeouts.hook),
            "ttlSecondsAfterFinished": 7 * 24 * 3600,
            "template": {
                "metadata": {"labels": labels(names, MIGRATE_COMPONENT)},
                "spec": {
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": False,
                    "securityContext": pod_security(),
                    "initContainers": init,
                    "containers": [migrate],
                    "volumes": volumes,
                },
            },
        },
    }


def worker_deployment(config: Config, opts: Options, names: Names) -> Obj:
    """``clinic worker``: drains on SIGTERM within ``CLINIC_WORKER_DRAIN_TIMEOUT``, so the
    grace period covers the drain plus the database's goodbye."""
    volumes, mounts = scratch_volumes()
    drain = 10
    pod_labels = labels(names, "worker")
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta(names.worker, opts, names, "worker"),
        "spec": {
            "replicas": opts.worker_replicas,
            "selector": {"matchLabels": pod_labels},
            "strategy": {"type": "RollingUpdate"},
            "template": {
                "metadata": {"labels": pod_labels},
                "spec": {
                    "automountServiceAccountToken": False,
                    "securityContext": pod_security(),
                    "terminationGracePeriodSeconds": drain + 20,
                    "containers": [
                        {
                            "name": "worker",
                            "image": opts.image,
                            "command": ["clinic", "worker"],
                            "env": [
                                *app_env(
                                    config,
                                    opts,
                                    secrets=("CLINIC_DATABASE_URL", "CLINIC_SECRET_KEY"),
                                ),
                                {"name": "CLINIC_WORKER_DRAIN_TIMEOUT", "value": f"PT{drain}S"},
                            ],
                            "resources": resources("100m", "192Mi", "500m", "512Mi"),
                            "securityContext": container_security(),
                            "volumeMounts": mounts,
                        }
                    ],
                    "volumes": volumes,
                },
            },
        },
    }
