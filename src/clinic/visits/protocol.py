"""The signalling protocol: what instances tell each other through PostgreSQL, what the server
and a browser (or any client) say over the websocket, and the close codes. Pure: no I/O.

Between instances every message is an ``Envelope``: a small JSON object with a version ``v``.
An instance ignores, with a log line, any envelope it does not understand (another version, an
unknown kind), so two releases running side by side during a deploy can signal each other.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import Any

VERSION = 1
"""The envelope version this code writes and reads."""

CHANNEL = "visit_signal"
"""The one LISTEN/NOTIFY channel every instance listens on."""

NOTIFY_LIMIT = 7900
"""NOTIFY payloads must be shorter than 8000 bytes; a bigger envelope travels by reference."""

MAX_CLIENT_MESSAGE = 64 * 1024
"""A client message larger than this is refused (an SDP is a few kilobytes)."""


class Kind(StrEnum):
    SIGNAL = "signal"
    """Opaque WebRTC data (description, candidate, restart request) from one role to the other."""
    CHANGED = "changed"
    """The visit's state (presence, admission, end) changed: read it again from the database."""
    REPLACE = "replace"
    """A newer connection of the same participant opened: the connection ``to`` must close."""


class CloseCode(IntEnum):
    """Websocket close codes. 4xxx are final: a client must not reconnect on them."""

    NORMAL = 1000
    """The participant left, or the visit ended."""
    UNAUTHENTICATED = 4401
    """No session, or the join token is missing, forged, expired, or for another user or visit."""
    FORBIDDEN = 4403
    """The user may not hold visits (a doctor not yet approved)."""
    NOT_FOUND = 4404
    """No such appointment, or the user is not its patient or doctor."""
    OUTSIDE_WINDOW = 4408
    """Not inside the join window; the reason says when it opens or closed."""
    REPLACED = 4409
    """The same participant opened a newer connection (another tab, or a reconnect)."""
    GONE = 4410
    """The visit ended or the appointment is no longer booked."""


FINAL_CLOSE_CODES = frozenset(int(c) for c in CloseCode)
"""Close codes after which a client stops; on any other (1001 going away, 1006 dropped, 1011,
1012 service restart, 1013 try again later) it reconnects with backoff."""


class UnknownMessage(ValueError):
    """An envelope this release does not understand (logged and ignored)."""


@dataclass(frozen=True, slots=True)
class Envelope:
    """One message between instances, about one visit."""

    visit: int
    kind: Kind
    sender: str
    """The connection id it came from ("" for the server itself)."""
    to: str
    """A role (signal), a connection id (replace) or "*" (changed)."""
    id: str
    body: dict[str, Any] = field(default_factory=dict)

    def encode(self) -> str:
        return json.dumps(
            {
                "v": VERSION,
                "visit": self.visit,
                "kind": self.kind.value,
                "from": self.sender,
                "to": self.to,
                "id": self.id,
                "body": self.body,
            },
            separators=(",", ":"),
        )


def decode(payload: str | bytes, *, body: dict[str, Any] | None = None) -> Envelope:
    """The envelope in ``payload``; ``body`` replaces a by-reference body (``ref``).

    Raises ``UnknownMessage`` for anything this version cannot act on.
    """
    try:
        data = json.loads(payload)
    except ValueError as exc:
        raise UnknownMessage("not JSON") from exc
    if not isinstance(data, dict):
        raise UnknownMessage("not an object")
    if data.get("v") != VERSION:
        raise UnknownMessage(f"version {data.get('v')!r}, this release speaks {VERSION}")
    try:
        kind = Kind(str(data.get("kind")))
    except ValueError as exc:
        raise UnknownMessage(f"unknown kind {data.get('kind')!r}") from exc
    visit, sender, to, mid = data.get("visit"), data.get("from"), data.get("to"), data.get("id")
    if not (
        isinstance(visit, int)
        and isinstance(sender, str)
        and isinstance(to, str)
        and isinstance(mid, str)
    ):
        raise UnknownMessage("missing visit, from, to or id")
    if body is None:
        body = data.get("body", {})
    if not isinstance(body, dict):
        raise UnknownMessage("body is not an object")
    return Envelope(visit=visit, kind=kind, sender=sender, to=to, id=mid, body=body)


def reference_of(payload: str | bytes) -> int | None:
    """The ``visit_messages`` id of a by-reference envelope, else None."""
    try:
        data = json.loads(payload)
    except ValueError:
        return None
    ref = data.get("ref") if isinstance(data, dict) else None
    return ref if isinstance(ref, int) else None


def by_reference(envelope: Envelope) -> str:
    """The head of an envelope whose body is stored in ``visit_messages`` (``ref`` is added by
    the database in the same statement that stores the body)."""
    head = json.loads(envelope.encode())
    del head["body"]
    return json.dumps(head, separators=(",", ":"))


# ---------------------------------------------------------------- the websocket

CLIENT_TYPES = frozenset({"signal", "admit", "end", "leave", "ping"})
"""What a client may send. Anything else is answered with an ``error`` and otherwise ignored."""


@dataclass(frozen=True, slots=True)
class ClientMessage:
    type: str
    data: Any = None


class BadClientMessage(ValueError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def parse_client(text: str) -> ClientMessage:
    if len(text) > MAX_CLIENT_MESSAGE:
        raise BadClientMessage("too_large", f"Messages are limited to {MAX_CLIENT_MESSAGE} bytes.")
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise BadClientMessage("bad_json", "Send JSON objects.") from exc
    if not isinstance(data, dict) or not isinstance(data.get("type"), str):
        raise BadClientMessage("bad_message", 'Send {"type": ...} objects.')
    if data["type"] not in CLIENT_TYPES:
        raise BadClientMessage("unknown_type", f"Unknown message type {data['type']!r}.")
    if data["type"] == "signal" and not isinstance(data.get("data"), dict):
        raise BadClientMessage("bad_message", "A signal carries a data object.")
    return ClientMessage(type=data["type"], data=data.get("data"))
