"""One-line summaries for the operator's terminal: what a deploy is doing, and the moment
the app is ready after ``bluegreen up``."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, tzinfo
from typing import Any


def deploy_line(
    running: Mapping[str, Any] | None, warm: Mapping[str, Any] | None, *, tz: tzinfo | None = None
) -> str | None:
    """What ``bluegreen status`` says about the deploy in progress, if any.

    A deploy whose switch and analysis passed and that only keeps the old colour warm for a
    rollback has succeeded for the operator: it is shown as such, with the time (``tz``,
    default local) until which ``bluegreen rollback`` is instant."""
    if running is None:
        return None
    what = f"deploy #{running['id']} of {running['release_id']}"
    if warm is not None:
        until = datetime.fromisoformat(warm["until"]).astimezone(tz)
        return (
            f"{what} succeeded; {warm['colour']} (old colour) warm until "
            f"{until:%H:%M}: `bluegreen rollback` is instant until then"
        )
    step = next((s["name"] for s in running["steps"] if s["status"] == "running"), "?")
    return f"{what} running: {step}"


def weights_line(st: Mapping[str, Any]) -> str | None:
    """While a phased switch splits new sessions (``/api/status`` ``weights``): the share of
    each colour and the planned steps, e.g. ``phased switch: new sessions green 10% · blue
    90% (steps 10% → 50% → 100%)``."""
    weights = st.get("weights")
    if not weights:
        return None
    shares = " · ".join(f"{c} {p}%" for c, p in weights.items())
    steps = " → ".join(f"{p}%" for p in st.get("switch_steps", []))
    return f"phased switch: new sessions {shares}" + (f" (steps {steps})" if steps else "")


def ready_line(app: str, *, public: str, https: str | None, dashboard: str, seconds: float) -> str:
    """The line ``bluegreen up`` prints once the app answers through Envoy."""
    where = f"{https} and {public}" if https else public
    return f"bluegreen: {app} ready on {where} in {seconds:.1f} s (dashboard {dashboard}/)"
