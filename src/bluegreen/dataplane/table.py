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
    """

    live: Colour | None
    preview: Colour | None
    backends: tuple[Backend, ...] = ()
    mode: Mode = "serving"

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
