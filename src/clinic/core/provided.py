"""A typed hole a lower feature leaves for a higher one to fill at the composition root.

Feature folders form a stack (``docs/architecture.md``): a folder imports only from the folders
below it. Where a lower feature needs something only a higher one knows (scheduling needs the
booked time that appointments keep), it declares a :class:`Provided` of a protocol type, and
``clinic.app.create_app`` fills it with the higher feature's implementation.
"""

from __future__ import annotations

from typing import Generic, TypeVar

T = TypeVar("T")


class Provided(Generic[T]):
    """One thing of type ``T``, given once by the composition root."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._value: T | None = None

    def provide(self, value: T) -> None:
        self._value = value

    def get(self) -> T:
        """The thing; refuses when nothing was provided (no app composed)."""
        if self._value is None:
            raise RuntimeError(f"{self.what} was not provided (clinic.app.create_app does)")
        return self._value

    def get_or_none(self) -> T | None:
        """The thing, or None where the feature that provides it is not installed."""
        return self._value
