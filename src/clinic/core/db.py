"""Engine, sessions and the declarative base (with a naming convention Alembic can diff)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

from sqlalchemy import Connection, DateTime, MetaData, event
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.types import TypeDecorator

from clinic.core import request_context

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """``timestamptz`` that refuses naive datetimes and always hands back UTC."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: object) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given for a timestamptz column")
        return value

    def process_result_value(self, value: datetime | None, dialect: object) -> datetime | None:
        return value.astimezone(UTC) if value is not None else None


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def make_engine(url: str, *, pool_size: int = 10, pool_timeout: float = 30.0) -> AsyncEngine:
    """An engine whose pool holds ``pool_size`` connections (twice that at peak); a checkout
    waits at most ``pool_timeout`` seconds, then raises ``sqlalchemy.exc.TimeoutError``.
    A shadow request's transactions are read-only (:mod:`clinic.core.request_context`)."""
    engine = create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_timeout=pool_timeout,
        pool_pre_ping=True,
        connect_args={"server_settings": {"application_name": "clinic", "timezone": "UTC"}},
    )
    event.listen(engine.sync_engine, "begin", _read_only_for_shadow)
    return engine


def _read_only_for_shadow(conn: Connection) -> None:
    """The database refuses any write of a mirrored request: it changes nothing, whatever
    the code it runs tries."""
    if request_context.current().shadow:
        conn.exec_driver_sql("SET TRANSACTION READ ONLY")


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


@asynccontextmanager
async def transaction(sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """A session inside one transaction: committed on success, rolled back on any error."""
    async with sessions() as session, session.begin():
        yield session


def utcnow() -> datetime:
    return datetime.now(UTC)
