"""Routing table: an immutable description of where traffic goes.

Everything here is pure. The router holds one table at a time and replaces it
atomically with :meth:`Router.swap`; every ``with_*`` method returns a new table.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

Colour = Literal["blue", "green"]
Mode = Literal["serving", "paused", "maintenance"]

COLOURS: tuple[Colour, ...] = ("blue", "green")

#: Stickiness cookie of a phased switch: the colour a browser landed on.
COOKIE = "bg-colour"


def other(colour: Colour) -> Colour:
    """The other colour."""
    return "green" if colour == "blue" else "blue"


@dataclass(frozen=True, slots=True)
class Shadow:
    """Mirror ``share`` (0..1) of live safe requests (GET, HEAD) to ``target``; its
    answers are discarded."""

    target: Colour
    share: float

    def __post_init__(self) -> None:
        if self.target not in COLOURS:
            raise ValueError(f"shadow target must be blue or green, not {self.target!r}")
        if not 0.0 <= self.share <= 1.0:
            raise ValueError(f"shadow share must be within [0, 1], not {self.share}")


@dataclass(frozen=True, slots=True)
class Weights:
    """Phased switch: ``percent`` (0..100) of NEW sessions go to ``candidate``; a
    session keeps the colour its ``bg-colour`` cookie names. 0 and 100 are atomic
    (everyone on the live colour, or everyone on the candidate; cookies ignored)."""

    candidate: Colour
    percent: int

    def __post_init__(self) -> None:
        if self.candidate not in COLOURS:
            raise ValueError(f"candidate must be blue or green, not {self.candidate!r}")
        if isinstance(self.percent, bool) or not isinstance(self.percent, int):
            raise ValueError(f"weight must be a whole percent, not {self.percent!r}")
        if not 0 <= self.percent <= 100:
            raise ValueError(f"weight must be within [0, 100], not {self.percent}")


@dataclass(frozen=True, slots=True)
class Identity:
    """Who runs the app and how to reach them, for the data plane's own pages (maintenance,
    pause): as the app itself says (``[identity] url``) or as ``[identity]`` configures."""

    name: str = ""
    contact: str = ""
    emergency: str = ""


@dataclass(frozen=True, slots=True)
class Backend:
    """One app instance the router can forward to."""

    id: str
    colour: Colour
    host: str
    port: int
    healthy: bool = True

    @property
    def origin(self) -> str:
        """``http://host:port`` of this backend (IPv6 hosts are bracketed)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class RoutingTable:
    """Which colour is live, which one the preview listener sees, and the instances.

    ``live is None`` means nothing is deployed: the public listener answers 503.
    ``preview is None`` falls back to the live colour.
    ``shadow`` mirrors a share of the public listeners' safe requests to a colour.
    ``weights`` splits new public sessions between ``live`` and a candidate colour.
    ``identities`` is what each colour's release says about who runs it.
    """

    live: Colour | None
    preview: Colour | None
    backends: tuple[Backend, ...] = ()
    mode: Mode = "serving"
    shadow: Shadow | None = None
    weights: Weights | None = None
    identities: tuple[tuple[Colour, Identity], ...] = ()

    def __post_init__(self) -> None:
        ids = [b.id for b in self.backends]
        if len(ids) != len(set(ids)):
            raise ValueError(f"duplicate backend ids in routing table: {ids}")

    def healthy(self, colour: Colour) -> tuple[Backend, ...]:
        """Healthy backends of ``colour``, in table order."""
        return tuple(b for b in self.backends if b.colour == colour and b.healthy)

    def of_colour(self, colour: Colour) -> tuple[Backend, ...]:
        """All backends of ``colour`` (healthy or not), in table order."""
        return tuple(b for b in self.backends if b.colour == colour)

    def backend(self, backend_id: str) -> Backend | None:
        """The backend with that id, or ``None``."""
        for b in self.backends:
            if b.id == backend_id:
                return b
        return None

    def preview_colour(self) -> Colour | None:
        """Colour the preview listener sends to: ``preview``, else ``live``."""
        return self.preview if self.preview is not None else self.live

    def public_colour(self) -> Colour | None:
        """The one colour every public request goes to, or ``None`` while a phased
        switch splits sessions (then see :meth:`split`) or nothing is live."""
        if self.split() is not None:
            return None
        if self.weights is not None and self.weights.percent == 100:
            return self.weights.candidate
        return self.live

    def split(self) -> tuple[Colour, Colour, int] | None:
        """``(candidate, live, percent)`` while new sessions are split between two
        colours (0 < percent < 100, candidate is not live), else ``None``."""
        w, live = self.weights, self.live
        if w is None or live is None or w.candidate == live or w.percent in (0, 100):
            return None
        return (w.candidate, live, w.percent)

    def identity_of(self, colour: Colour | None) -> Identity | None:
        """What ``colour``'s release said about who runs it, if it was asked."""
        return dict(self.identities).get(colour) if colour is not None else None

    def with_identity(self, colour: Colour, identity: Identity | None) -> RoutingTable:
        """Same table with ``colour``'s identity replaced (``None``: forgotten)."""
        kept = tuple((c, i) for c, i in self.identities if c != colour)
        return replace(self, identities=kept + (((colour, identity),) if identity else ()))

    def with_shadow(self, shadow: Shadow | None) -> RoutingTable:
        """Same table mirroring to ``shadow`` (``None``: no mirroring)."""
        return replace(self, shadow=shadow)

    def with_weights(self, weights: Weights | None) -> RoutingTable:
        """Same table with another session split (``None``: atomic, as ``live`` says)."""
        return replace(self, weights=weights)

    def with_live(self, colour: Colour | None) -> RoutingTable:
        """Same table with another live colour."""
        return replace(self, live=colour)

    def with_preview(self, colour: Colour | None) -> RoutingTable:
        """Same table with another preview colour."""
        return replace(self, preview=colour)

    def with_backends(self, backends: tuple[Backend, ...]) -> RoutingTable:
        """Same table with the backend list replaced."""
        return replace(self, backends=tuple(backends))

    def with_colour_backends(self, colour: Colour, backends: tuple[Backend, ...]) -> RoutingTable:
        """Replace only the backends of ``colour``; the other colour's are kept."""
        if any(b.colour != colour for b in backends):
            raise ValueError(f"all backends must be {colour}")
        others = tuple(b for b in self.backends if b.colour != colour)
        return replace(self, backends=others + tuple(backends))

    def with_mode(self, mode: Mode) -> RoutingTable:
        """Same table in another mode."""
        return replace(self, mode=mode)

    def with_health(self, backend_id: str, healthy: bool) -> RoutingTable:
        """Same table with one backend's health flag changed.

        Raises ``KeyError`` if no backend has that id.
        """
        if self.backend(backend_id) is None:
            raise KeyError(backend_id)
        return replace(
            self,
            backends=tuple(
                replace(b, healthy=healthy) if b.id == backend_id else b for b in self.backends
            ),
        )


EMPTY_TABLE = RoutingTable(live=None, preview=None)
