"""The per-instance signalling bus: one asyncpg connection LISTENs on ``visit_signal``, a small
pool sends NOTIFYs, and envelopes are handed to the connections of this instance that belong to
the envelope's visit. Presence rows of this instance get a heartbeat; expired rows (a crashed
instance's) are deleted and their visits told.

Envelopes are sent inline when they fit in a NOTIFY payload; a larger one (an SDP with many
candidates can be) is stored in ``visit_messages`` and the notification carries its id, in the
same statement. PostgreSQL delivers notifications in commit order and one sender's messages
are sent one after another, so a participant's offer always arrives before its candidates.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import defaultdict
from collections.abc import Iterable
from datetime import timedelta
from typing import Any, Protocol

import asyncpg

from clinic.visits import protocol
from clinic.visits.protocol import CHANNEL, NOTIFY_LIMIT, Envelope, Kind, UnknownMessage

log = logging.getLogger(__name__)

PRESENCE_TTL = timedelta(seconds=15)
HEARTBEAT = timedelta(seconds=5)
MESSAGE_RETENTION = timedelta(minutes=1)


class Subscriber(Protocol):
    """A websocket connection of this instance, as the hub sees it."""

    @property
    def visit_id(self) -> int: ...

    @property
    def connection_id(self) -> str: ...

    @property
    def role(self) -> str: ...

    @property
    def user_id(self) -> int: ...

    def deliver(self, envelope: Envelope) -> None:
        """Take an envelope for this connection's visit (must not block)."""

    def replaced(self) -> None:
        """This connection's presence row belongs to a newer connection now."""


def plain_dsn(url: str) -> str:
    """asyncpg wants ``postgresql://``; the settings hold SQLAlchemy's ``postgresql+asyncpg://``."""
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


def new_id() -> str:
    return uuid.uuid4().hex


class Hub:
    """Start with ``async with Hub(...)``; every task and connection it opens is closed on exit."""

    def __init__(
        self,
        *,
        dsn: str,
        instance_id: str,
        presence_ttl: timedelta = PRESENCE_TTL,
        heartbeat: timedelta = HEARTBEAT,
        channel: str = CHANNEL,
    ) -> None:
        self.dsn = plain_dsn(dsn)
        self.instance_id = instance_id
        self.presence_ttl = presence_ttl
        self.heartbeat = heartbeat
        self.channel = channel
        self._by_visit: dict[int, set[Subscriber]] = defaultdict(set)
        self._by_connection: dict[str, Subscriber] = {}
        self._inbox: asyncio.Queue[str] = asyncio.Queue()
        self._listener: asyncpg.Connection | None = None
        self._pool: asyncpg.Pool | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._listening = asyncio.Event()
        self.ignored = 0
        """Envelopes this instance did not understand (each also logged)."""

    # ------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> Hub:
        self._pool = await asyncpg.create_pool(self.dsn, min_size=1, max_size=4)
        await self._listen()
        self._tasks = [
            asyncio.create_task(self._dispatch(), name="visits-dispatch"),
            asyncio.create_task(self._beat(), name="visits-heartbeat"),
        ]
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if self._listener is not None:
            self._listener.remove_termination_listener(self._on_lost)
            with contextlib.suppress(Exception):
                await self._listener.close(timeout=2)
            self._listener = None
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def _listen(self) -> None:
        conn = await asyncpg.connect(
            self.dsn, server_settings={"application_name": "clinic-visits"}
        )
        await conn.add_listener(self.channel, self._on_notify)
        conn.add_termination_listener(self._on_lost)
        self._listener = conn
        self._listening.set()

    def _on_lost(self, conn: object) -> None:
        # The LISTEN connection died (database restart, network): reconnect in the heartbeat.
        log.warning("visits: LISTEN connection lost on %s; reconnecting", self.instance_id)
        self._listening.clear()

    def _on_notify(self, conn: object, pid: int, channel: str, payload: str) -> None:
        self._inbox.put_nowait(payload)

    # ------------------------------------------------------------ local connections

    def subscribe(self, subscriber: Subscriber) -> None:
        self._by_visit[subscriber.visit_id].add(subscriber)
        self._by_connection[subscriber.connection_id] = subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        subs = self._by_visit.get(subscriber.visit_id)
        if subs is not None:
            subs.discard(subscriber)
            if not subs:
                del self._by_visit[subscriber.visit_id]
        self._by_connection.pop(subscriber.connection_id, None)

    @property
    def connections(self) -> int:
        return len(self._by_connection)

    # ------------------------------------------------------------ sending

    async def publish(self, envelope: Envelope) -> None:
        """Send ``envelope`` to every instance (this one included)."""
        pool = self._require_pool()
        payload = envelope.encode()
        if len(payload.encode()) <= NOTIFY_LIMIT:
            await pool.execute("SELECT pg_notify($1, $2)", self.channel, payload)
            return
        await pool.execute(
            "WITH m AS (INSERT INTO visit_messages (body) VALUES ($1) RETURNING id) "
            "SELECT pg_notify($2, (($3::jsonb) || jsonb_build_object('ref', m.id))::text) FROM m",
            payload,
            self.channel,
            protocol.by_reference(envelope),
        )

    async def changed(self, visit_id: int) -> None:
        await self.publish(
            Envelope(visit=visit_id, kind=Kind.CHANGED, sender="", to="*", id=new_id())
        )

    def _require_pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("the visits hub is not running")
        return self._pool

    # ------------------------------------------------------------ receiving

    async def _dispatch(self) -> None:
        while True:
            payload = await self._inbox.get()
            try:
                envelope = await self._resolve(payload)
            except UnknownMessage as exc:
                self.ignored += 1
                log.warning("visits: ignoring a signalling message: %s: %.200s", exc, payload)
                continue
            except Exception:
                log.exception("visits: could not read a signalling message")
                continue
            if envelope is None:
                continue
            for subscriber in list(self._by_visit.get(envelope.visit, ())):
                try:
                    subscriber.deliver(envelope)
                except Exception:
                    log.exception("visits: delivery to %s failed", subscriber.connection_id)

    async def _resolve(self, payload: str) -> Envelope | None:
        ref = protocol.reference_of(payload)
        if ref is None:
            head = protocol.decode(payload)
            return head if head.visit in self._by_visit else None
        # Read the stored body only when a connection here belongs to the visit.
        head = protocol.decode(payload, body={})
        if head.visit not in self._by_visit:
            return None
        stored = await self._require_pool().fetchval(
            "SELECT body FROM visit_messages WHERE id = $1", ref
        )
        if stored is None:
            log.warning("visits: message %s expired before it was read", ref)
            return None
        return protocol.decode(stored)

    # ------------------------------------------------------------ presence

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat.total_seconds())
            try:
                await self.beat_once()
            except Exception:
                log.exception("visits: heartbeat failed")

    async def beat_once(self) -> None:
        """Refresh this instance's presence rows, close connections whose row a newer
        connection took, delete expired rows (any instance's) and tell their visits."""
        if not self._listening.is_set():
            with contextlib.suppress(Exception):
                await self._listen()
                # Messages may have been missed while not listening: every visit re-reads.
                for visit_id in list(self._by_visit):
                    await self.changed(visit_id)
        pool = self._require_pool()
        ttl = self.presence_ttl
        async with pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                "UPDATE visit_presence SET expires_at = now() + $2::interval "
                "WHERE instance_id = $1 RETURNING connection_id",
                self.instance_id,
                ttl,
            )
            expired = await conn.fetch(
                "DELETE FROM visit_presence WHERE expires_at < now() RETURNING visit_id"
            )
            await conn.execute(
                "DELETE FROM visit_messages WHERE created_at < now() - $1::interval",
                MESSAGE_RETENTION,
            )
        alive = {r["connection_id"] for r in rows}
        for connection_id, subscriber in list(self._by_connection.items()):
            if connection_id not in alive and not await self._reclaim(subscriber):
                subscriber.replaced()
        for visit_id in _unique(r["visit_id"] for r in expired):
            await self.changed(visit_id)

    async def _reclaim(self, subscriber: Subscriber) -> bool:
        """A live connection whose row is gone (expired while this instance stalled) gets it
        back, unless a newer connection of the same participant holds it."""
        taken = await self._require_pool().fetchval(
            "INSERT INTO visit_presence "
            "(visit_id, role, user_id, connection_id, instance_id, expires_at) "
            "VALUES ($1, $2, $3, $4, $5, now() + $6::interval) "
            "ON CONFLICT (visit_id, role) DO NOTHING RETURNING connection_id",
            subscriber.visit_id,
            subscriber.role,
            subscriber.user_id,
            subscriber.connection_id,
            self.instance_id,
            self.presence_ttl,
        )
        if taken is not None:
            await self.changed(subscriber.visit_id)
        return taken is not None

    async def raw_notify(self, payload: str) -> None:
        """Send a raw payload (tests and tools: e.g. what another release would send)."""
        await self._require_pool().execute("SELECT pg_notify($1, $2)", self.channel, payload)


def _unique(values: Iterable[Any]) -> list[Any]:
    return list(dict.fromkeys(values))
