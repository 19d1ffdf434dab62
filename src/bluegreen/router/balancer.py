"""Least-outstanding-requests balancer with round-robin tie breaking. Pure, no I/O."""

from __future__ import annotations

from collections.abc import Collection, Sequence

from bluegreen.dataplane.table import Backend


class Balancer:
    """Chooses a backend and keeps count of outstanding requests per backend id.

    ``pick`` returns the candidate with the fewest outstanding requests; among
    equals it rotates, so sequential requests on an idle pool spread evenly
    instead of all landing on the first instance.
    """

    __slots__ = ("_outstanding", "_rr")

    def __init__(self) -> None:
        self._outstanding: dict[str, int] = {}
        self._rr = 0

    def pick(self, candidates: Sequence[Backend], exclude: Collection[str] = ()) -> Backend | None:
        """Best candidate whose id is not in ``exclude``, or ``None`` if there is none."""
        best: list[Backend] = []
        best_load = -1
        for b in candidates:
            if b.id in exclude:
                continue
            load = self._outstanding.get(b.id, 0)
            if not best or load < best_load:
                best = [b]
                best_load = load
            elif load == best_load:
                best.append(b)
        if not best:
            return None
        chosen = best[self._rr % len(best)]
        self._rr += 1
        return chosen

    def acquire(self, backend_id: str) -> None:
        """Record one more outstanding request on ``backend_id``."""
        self._outstanding[backend_id] = self._outstanding.get(backend_id, 0) + 1

    def release(self, backend_id: str) -> None:
        """Record that a request on ``backend_id`` finished (never goes below zero)."""
        n = self._outstanding.get(backend_id, 0) - 1
        if n > 0:
            self._outstanding[backend_id] = n
        else:
            # Drop zero entries so backends removed from the table do not linger.
            self._outstanding.pop(backend_id, None)

    def outstanding(self, backend_id: str) -> int:
        """Requests currently outstanding on ``backend_id``."""
        return self._outstanding.get(backend_id, 0)
