"""The clinic's feature folders and how the app finds their parts."""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Iterator
from types import ModuleType

FEATURES = ("accounts", "scheduling", "appointments", "visits", "notify", "audit")
"""Feature folders. Each may have ``api`` and ``pages`` (a ``router`` each) and ``runtime``
(``lifespan(state)``: background work started with the app and stopped with it)."""


def feature_modules(kind: str) -> Iterator[ModuleType]:
    """The ``clinic.<feature>.<kind>`` modules that exist, in FEATURES order."""
    for feature in FEATURES:
        if importlib.util.find_spec(f"clinic.{feature}") is None:
            continue
        if importlib.util.find_spec(f"clinic.{feature}.{kind}") is not None:
            yield importlib.import_module(f"clinic.{feature}.{kind}")
