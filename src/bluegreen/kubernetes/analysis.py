"""The two AnalysisTemplates: smoke journeys before promotion, metrics after it."""

from __future__ import annotations

from bluegreen.config import Config
from bluegreen.errors import ConfigError
from bluegreen.kubernetes import promql
from bluegreen.kubernetes.manifests import (
    Names,
    Obj,
    Options,
    app_env,
    argv,
    container_security,
    meta,
    pod_security,
    scratch_volumes,
    seconds,
)

CHECK_COMPONENT = (
    "deploy-check"  # component label of the analysis Job pods (NetworkPolicy admits them)
)


def smoke_container(config: Config, opts: Options, *, name: str, image: str, service: str) -> Obj:
    smoke = config.hooks.smoke
    if smoke is None:
        raise ConfigError("hooks.smoke: the pre-promotion analysis needs a smoke hook")
    _, mounts = scratch_volumes()
    return {
        "name": name,
        "image": image,
        "command": argv(smoke, base_url=f"http://{service}", release="-"),
        "env": app_env(config, opts, secrets=("CLINIC_SECRET_KEY", "CLINIC_SMOKE_PASSWORD")),
        "resources": {
            "requests": {"cpu": "100m", "memory": "128Mi"},
            "limits": {"memory": "256Mi"},
        },
        "securityContext": container_security(),
        "volumeMounts": mounts,
    }


def pre_promotion(config: Config, opts: Options, names: Names) -> Obj:
    """A Job, one after the other: the new release's smoke journey against the preview Service,
    then the live release's own smoke journey (its image) against the active Service, which
    still serves the live release, now on the migrated schema."""
    volumes, _ = scratch_volumes()
    job = {
        "backoffLimit": 0,
        "activeDeadlineSeconds": 2 * seconds(config.timeouts.hook),
        "template": {
            "metadata": {
                "labels": {
                    "app.kubernetes.io/name": names.app,
                    "app.kubernetes.io/component": CHECK_COMPONENT,
                }
            },
            "spec": {
                "restartPolicy": "Never",
                "automountServiceAccountToken": False,
                "securityContext": pod_security(),
                "initContainers": [
                    smoke_container(
                        config, opts, name="smoke-preview", image=opts.image, service=names.preview
                    )
                ],
                "containers": [
                    smoke_container(
                        config,
                        opts,
                        name="smoke-live-on-new-schema",
                        image="{{args.live-image}}",
                        service=names.active,
                    )
                ],
                "volumes": volumes,
            },
        },
    }
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "AnalysisTemplate",
        "metadata": meta(names.pre, opts, names, "analysis"),
        "spec": {
            "args": [{"name": "live-image"}],
            "metrics": [{"name": "smoke", "provider": {"job": {"spec": job}}}],
        },
    }


def threshold_args(config: Config) -> list[Obj]:
    a = config.analysis
    values = {
        "max-error-rate": a.max_error_rate,
        "max-error-rate-ratio": a.max_error_rate_ratio,
        "max-p95-ratio": a.max_p95_ratio,
        "min-p95-ms": a.min_p95_ms,
        "min-requests": a.min_requests,
    }
    return [{"name": k, "value": f"{v:g}"} for k, v in values.items()]


def post_promotion(config: Config, opts: Options, names: Names) -> Obj:
    """Prometheus on the app's own metrics, new ReplicaSet against old (see :mod:`promql`):
    one measurement after the analysis window; no data is inconclusive, never success."""
    # Prometheus needs a few scrapes in a range: at least a minute, measured once it is over.
    window = max(seconds(config.timeouts.analysis_window), 60)
    sel = promql.Selector(namespace=opts.namespace, window=window)

    def metric(name: str, query: str) -> Obj:
        return {
            "name": name,
            "initialDelay": f"{window}s",
            "count": 1,
            "failureLimit": 0,
            "inconclusiveLimit": 0,
            "successCondition": promql.SUCCESS,
            "failureCondition": promql.FAILURE,
            "provider": {"prometheus": {"address": opts.prometheus_url, "query": query}},
        }

    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "AnalysisTemplate",
        "metadata": meta(names.post, opts, names, "analysis"),
        "spec": {
            "args": [{"name": "new-hash"}, {"name": "old-hash"}, *threshold_args(config)],
            "metrics": [
                metric("error-rate-over-allowance", promql.error_rate_excess(sel)),
                metric("p95-over-bound", promql.p95_excess(sel)),
            ],
        },
    }
