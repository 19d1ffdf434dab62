"""One use case, one transaction, retried when PostgreSQL gives up on it under contention.

A deadlock (SQLSTATE 40P01) or a serialization failure (40001) rolls the whole transaction
back; nothing of it happened, so running the use case again in a fresh transaction is safe.
After a bounded number of tries the caller's ``contention`` error (a 409) is raised: a race
ends as the conflict it is, never as a server error.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from clinic.core.errors import ClinicError

T = TypeVar("T")

TRANSIENT = frozenset({"40P01", "40001"})
"""deadlock_detected, serialization_failure"""
ATTEMPTS = 4

log = logging.getLogger(__name__)


def is_transient(exc: BaseException) -> bool:
    """A deadlock or serialization failure, which a fresh transaction may not meet again."""
    return isinstance(exc, DBAPIError) and getattr(exc.orig, "sqlstate", None) in TRANSIENT


async def in_one_transaction(
    session: AsyncSession,
    work: Callable[[], Awaitable[T]],
    *,
    contention: Callable[[], ClinicError],
    attempts: int = ATTEMPTS,
) -> T:
    """``work()`` inside one transaction of ``session`` (``work`` opens none of its own); on
    a deadlock or serialization failure, again in a fresh one, at most ``attempts`` times in
    all; then ``contention()`` is raised."""
    for attempt in range(1, attempts + 1):
        try:
            async with session.begin():
                return await work()
        except DBAPIError as exc:
            if not is_transient(exc):
                raise
            log.info("transaction %d/%d rolled back by contention: %s", attempt, attempts, exc)
            if attempt == attempts:
                raise contention() from exc
        # Step apart before the next try, so the same transactions do not meet again.
        await asyncio.sleep(random.uniform(0, 0.02 * attempt))
    raise AssertionError("unreachable")
