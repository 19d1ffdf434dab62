"""The pure parts of visits: the join window, join tokens, TURN credentials, the envelope."""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import UTC, datetime, timedelta

import pytest

from clinic.visits import protocol, tokens
from clinic.visits.protocol import Envelope, Kind, UnknownMessage
from clinic.visits.window import WindowState, join_window

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def test_join_window_edges() -> None:
    w = join_window(
        starts_at=T0,
        ends_at=T0 + timedelta(minutes=30),
        before=timedelta(minutes=10),
        after=timedelta(minutes=30),
    )
    assert w.state(T0 - timedelta(minutes=10, seconds=1)) is WindowState.NOT_YET
    assert w.state(T0 - timedelta(minutes=10)) is WindowState.OPEN
    assert w.state(T0 + timedelta(hours=1)) is WindowState.OPEN
    assert w.state(T0 + timedelta(hours=1, seconds=1)) is WindowState.CLOSED
    with pytest.raises(ValueError):
        join_window(
            starts_at=T0.replace(tzinfo=None), ends_at=T0, before=timedelta(), after=timedelta()
        )


def test_join_token_is_bound_signed_and_expires() -> None:
    secret = "s" * 32
    token = tokens.issue_join_token(secret=secret, user_id=7, appointment_id=42)
    claim = tokens.read_join_token(secret=secret, token=token, ttl=timedelta(minutes=5))
    assert (claim.user_id, claim.appointment_id) == (7, 42)
    later = datetime.now(UTC) + timedelta(minutes=6)
    with pytest.raises(tokens.TokenRefused) as expired:
        tokens.read_join_token(secret=secret, token=token, ttl=timedelta(minutes=5), now=later)
    assert expired.value.reason == "expired"
    for bad in (token[:-2] + "xx", "", "garbage", token.replace(".", "", 1)):
        with pytest.raises(tokens.TokenRefused):
            tokens.read_join_token(secret=secret, token=bad, ttl=timedelta(minutes=5))
    with pytest.raises(tokens.TokenRefused):
        tokens.read_join_token(secret="t" * 32, token=token, ttl=timedelta(minutes=5))


def test_turn_credentials_are_what_coturn_use_auth_secret_checks() -> None:
    cred = tokens.turn_credential(secret="north", user_id=12, now=T0, ttl=timedelta(hours=1))
    expiry = int((T0 + timedelta(hours=1)).timestamp())
    assert cred.username == f"{expiry}:12"
    # coturn: password = base64(HMAC-SHA1(static-auth-secret, username))
    expected = base64.b64encode(
        hmac.new(b"north", f"{expiry}:12".encode(), hashlib.sha1).digest()
    ).decode()
    assert cred.credential == expected
    servers = tokens.ice_servers(
        stun_urls=["stun:a"],
        turn_urls=["turn:b"],
        turn_secret=None,
        user_id=1,
        now=T0,
        ttl=timedelta(hours=1),
    )
    assert servers == [{"urls": ["stun:a"]}]  # no secret: no TURN that would refuse anyway


def test_envelopes_round_trip_and_unknown_ones_are_refused() -> None:
    e = Envelope(visit=3, kind=Kind.SIGNAL, sender="c1", to="patient", id="m1", body={"a": 1})
    assert protocol.decode(e.encode()) == e
    head = protocol.by_reference(e)
    assert "body" not in head and protocol.reference_of(head) is None
    for payload in (
        e.encode().replace('"v":1', '"v":2'),
        e.encode().replace('"signal"', '"teleport"'),
        '{"v":1}',
        "[]",
        "nope",
    ):
        with pytest.raises(UnknownMessage):
            protocol.decode(payload)


def test_client_messages() -> None:
    assert protocol.parse_client('{"type": "signal", "data": {"x": 1}}').data == {"x": 1}
    for text, code in (
        ("{", "bad_json"),
        ('{"type": "fly"}', "unknown_type"),
        ('{"type": "signal", "data": 3}', "bad_message"),
        ('{"type": "ping", "pad": "' + "x" * 70000 + '"}', "too_large"),
    ):
        with pytest.raises(protocol.BadClientMessage) as exc:
            protocol.parse_client(text)
        assert exc.value.code == code
