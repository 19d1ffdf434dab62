"""Kubernetes with Argo Rollouts: the same release, checks and thresholds past one host.

:func:`~bluegreen.kubernetes.manifests.render` turns ``bluegreen.toml`` into a list of
Kubernetes objects (pure); :mod:`~bluegreen.kubernetes.output` writes them as a kustomize base;
:mod:`~bluegreen.kubernetes.cli` holds ``bluegreen render kubernetes`` and
``bluegreen rehearse``. See docs/kubernetes.md.
"""
