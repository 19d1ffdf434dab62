"""Services, autoscaling, disruption budget and network policies; and :func:`render`."""

from __future__ import annotations

from typing import Any

from bluegreen.config import Config
from bluegreen.kubernetes.analysis import CHECK_COMPONENT, post_promotion, pre_promotion
from bluegreen.kubernetes.manifests import (
    METRICS_PORT,
    Names,
    Obj,
    Options,
    k8s_name,
    labels,
    meta,
    rollout,
)
from bluegreen.kubernetes.workloads import MIGRATE_COMPONENT, migration_job, worker_deployment


def service(name: str, opts: Options, names: Names) -> Obj:
    """Argo Rollouts adds the pod template hash to the selector of the active/preview one."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta(name, opts, names, "web"),
        "spec": {
            "type": "ClusterIP",
            "selector": labels(names, "web"),
            "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def autoscaler(config: Config, opts: Options, names: Names) -> Obj:
    low = max(config.replicas.blue, config.replicas.green)
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": meta(names.web, opts, names, "web"),
        "spec": {
            "scaleTargetRef": {
                "apiVersion": "argoproj.io/v1alpha1",
                "kind": "Rollout",
                "name": names.web,
            },
            "minReplicas": low,
            "maxReplicas": opts.max_replicas or 4 * low,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": 70},
                    },
                }
            ],
        },
    }


def disruption_budget(opts: Options, names: Names) -> Obj:
    """Node drains take web pods one at a time (both colours count: the Services pick)."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": meta(names.web, opts, names, "web"),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": labels(names, "web")}},
    }


def _namespace(name: str) -> Obj:
    return {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": name}}}


def _policy(
    name: str, opts: Options, names: Names, selector: dict[str, str], ingress: list[Obj]
) -> Obj:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": meta(name, opts, names, "network"),
        "spec": {
            "podSelector": {"matchLabels": selector},
            "policyTypes": ["Ingress"],
            "ingress": ingress,
        },
    }


def network_policies(opts: Options, names: Names) -> list[Obj]:
    """Web pods: HTTP only from the ingress controller's namespace and this app's deploy
    checks, metrics only from the monitoring namespace. The database: only this app's pods."""
    own = {"app.kubernetes.io/part-of": names.app}
    checks = {"app.kubernetes.io/name": names.app, "app.kubernetes.io/component": CHECK_COMPONENT}
    web = _policy(
        f"{names.web}-web",
        opts,
        names,
        labels(names, "web"),
        [
            {
                "from": [
                    _namespace(opts.ingress_namespace),
                    {"podSelector": {"matchLabels": checks}},
                ],
                "ports": [{"port": "http", "protocol": "TCP"}],
            },
            {
                "from": [_namespace(opts.monitoring_namespace)],
                "ports": [{"port": METRICS_PORT, "protocol": "TCP"}],
            },
        ],
    )
    app_pods = [
        {"podSelector": {"matchLabels": {**own, "app.kubernetes.io/component": c}}}
        for c in ("web", "worker", MIGRATE_COMPONENT)
    ]
    database = _policy(
        f"{names.app}-database",
        opts,
        names,
        dict(opts.database_labels),
        [{"from": app_pods, "ports": [{"port": opts.database_port, "protocol": "TCP"}]}],
    )
    return [web, database]


def render(config: Config, opts: Options) -> list[Obj]:
    """Every object of the kustomize base, in apply order. Pure: same input, same output."""
    names = Names(k8s_name(config.app.name))
    objects: list[Any] = [
        migration_job(config, opts, names),
        service(names.active, opts, names),
        service(names.preview, opts, names),
        pre_promotion(config, opts, names),
    ]
    if config.timeouts.analysis_window > 0:
        objects.append(post_promotion(config, opts, names))
    objects += [
        rollout(config, opts, names),
        autoscaler(config, opts, names),
        disruption_budget(opts, names),
        worker_deployment(config, opts, names),
        *network_policies(opts, names),
    ]
    return objects
