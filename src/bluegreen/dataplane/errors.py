"""The data plane's one error: Envoy did not start, did not answer, or did not apply."""

from __future__ import annotations

from bluegreen.errors import BluegreenError


class DataPlaneError(BluegreenError):
    """Envoy could not be started, reached or configured; the message says which and why."""

    code = "dataplane_error"
    exit_code = 1
