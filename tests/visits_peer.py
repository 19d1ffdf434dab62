"""aiortc peers on top of ``clinic.visits.client.SignallingClient``, for the visit tests and the
deploy test. They speak the same signal data as ``visit.js``: ``{"description": {type, sdp},
"session", "fresh"}``, ``{"candidate": {candidate, sdpMid, sdpMLineIndex, usernameFragment},
"session"}``. Candidates are sent one by one (trickled), not inside the SDP.

aiortc (1.16) has no ICE restart (no ``iceRestart`` offer option, no ``restartIce()``), so
``Peer.restart_ice()`` performs one at the transport level, the way a browser does it: new ICE
credentials and freshly gathered candidates go to the other peer as an offer and an answer
through signalling, a new connectivity check runs, and the DTLS-SRTP session (keys, media) moves
onto the newly nominated candidate pair; the old pair's sockets are then closed, so media that
still arrives afterwards travels the restarted path.

Usage (the deploy test)::

    doctor = Peer(doctor_client, role="doctor"); patient = Peer(patient_client, role="patient")
    await doctor.start(); await patient.start()
    await doctor.call()                      # offer, answer, candidates through the websocket
    await doctor.wait_media(); await patient.wait_media()
    ...                                      # switch colours, stop the old one
    await doctor.restart_ice()               # through whichever instance signalling is on now
    await doctor.wait_media(); await patient.wait_media()
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import time
import uuid
from typing import Any

import av
from aioice import Candidate, Connection
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCIceCandidate,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.rtcicetransport import RTCIceTransport, candidate_from_aioice, candidate_to_aioice
from aiortc.sdp import candidate_from_sdp, candidate_to_sdp

from clinic.visits.client import SignallingClient

VIDEO_CLOCK = 90000


class SmallVideoTrack(MediaStreamTrack):
    """A 160x120 test picture at 15 frames a second (cheap to encode)."""

    kind = "video"

    def __init__(self) -> None:
        super().__init__()
        self._start: float | None = None
        self._pts = 0

    async def recv(self) -> av.VideoFrame:
        fps = 15
        if self._start is None:
            self._start = time.monotonic()
        else:
            self._pts += VIDEO_CLOCK // fps
            wait = self._start + self._pts / VIDEO_CLOCK - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
        frame = av.VideoFrame(width=160, height=120, format="yuv420p")
        for plane in frame.planes:
            plane.update(bytes([(self._pts // 3000) % 256]) * plane.buffer_size)
        frame.pts = self._pts
        frame.time_base = fractions.Fraction(1, VIDEO_CLOCK)
        return frame


def split_candidates(sdp: str) -> tuple[str, list[dict[str, Any]]]:
    """The SDP without its candidate lines, and those candidates in browser JSON form."""
    lines, candidates = [], []
    mid, index, ufrag = None, -1, None
    for line in sdp.splitlines():
        if line.startswith("m="):
            index += 1
        elif line.startswith("a=mid:"):
            mid = line.removeprefix("a=mid:")
        elif line.startswith("a=ice-ufrag:"):
            ufrag = line.removeprefix("a=ice-ufrag:")
        if line.startswith("a=candidate:"):
            candidates.append(
                {
                    "candidate": line.removeprefix("a="),
                    "sdpMid": mid,
                    "sdpMLineIndex": index,
                    "usernameFragment": ufrag,
                }
            )
            continue
        if line == "a=end-of-candidates":
            continue
        lines.append(line)
    return "\r\n".join(lines) + "\r\n", candidates


def ice_credentials(sdp: str) -> tuple[str, str]:
    ufrag = next(x for x in sdp.splitlines() if x.startswith("a=ice-ufrag:"))
    pwd = next(x for x in sdp.splitlines() if x.startswith("a=ice-pwd:"))
    return ufrag.removeprefix("a=ice-ufrag:"), pwd.removeprefix("a=ice-pwd:")


def with_credentials(sdp: str, ufrag: str, pwd: str) -> str:
    out = []
    for line in sdp.splitlines():
        if line.startswith("a=ice-ufrag:"):
            line = f"a=ice-ufrag:{ufrag}"
        elif line.startswith("a=ice-pwd:"):
            line = f"a=ice-pwd:{pwd}"
        out.append(line)
    return "\r\n".join(out) + "\r\n"


def _candidate(data: dict[str, Any]) -> RTCIceCandidate:
    c = candidate_from_sdp(str(data["candidate"]).split(":", 1)[1])
    c.sdpMid = data.get("sdpMid")
    c.sdpMLineIndex = data.get("sdpMLineIndex")
    return c


class Peer:
    """A WebRTC peer (one video track each way) that signals through a ``SignallingClient``.
    The doctor calls (offers); the patient answers."""

    def __init__(self, client: SignallingClient, *, role: str) -> None:
        self.client = client
        self.role = role
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.pc.addTrack(SmallVideoTrack())
        self.session: str | None = None
        self.frames = 0
        """Decoded video frames received from the other peer."""
        self.restarts = 0
        self.sent_candidates = 0
        self.received_candidates = 0
        self.errors: list[BaseException] = []
        self._restart: tuple[RTCIceTransport, Connection, Connection] | None = None
        self._restarted = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.rtp_bytes = 0
        self.pc.on("track", self._on_track)
        self._count_rtp()

    async def start(self) -> None:
        self._tasks.append(asyncio.create_task(self._signals()))

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.pc.close()
        if self._restart is not None:
            await self._restart[2].close()

    # ------------------------------------------------------------ media

    def _on_track(self, track: MediaStreamTrack) -> None:
        async def consume() -> None:
            while True:
                try:
                    await track.recv()
                except Exception:
                    return
                self.frames += 1

        self._tasks.append(asyncio.create_task(consume()))

    def _count_rtp(self) -> None:
        # aiortc's inbound-rtp stats have packetsReceived but no bytesReceived: count the
        # bytes of every RTP packet the receiver is handed (after SRTP decryption).
        receiver = self.pc.getTransceivers()[0].receiver
        handle = receiver._handle_rtp_packet

        async def counting(packet: Any, arrival_time_ms: int) -> None:
            self.rtp_bytes += len(packet.serialize())
            await handle(packet, arrival_time_ms)

        receiver._handle_rtp_packet = counting

    async def inbound_bytes(self) -> int:
        """Inbound RTP bytes so far (and the stats' packet count must agree it is flowing)."""
        return self.rtp_bytes

    async def inbound_packets(self) -> int:
        stats = await self.pc.getStats()
        return sum(int(s.packetsReceived) for s in stats.values() if s.type == "inbound-rtp")

    async def wait_media(self, *, growth: int = 2000, within: float = 20.0) -> int:
        """Wait until inbound RTP bytes grow by ``growth``; returns the byte count."""
        start = await self.inbound_bytes()
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            now = await self.inbound_bytes()
            if now - start >= growth:
                return now
            await asyncio.sleep(0.1)
        raise AssertionError(f"{self.role}: inbound RTP bytes grew only {now - start} in {within}s")

    # ------------------------------------------------------------ offer / answer

    async def _send_description(self, sdp: str, kind: str, *, fresh: bool) -> None:
        bare, candidates = split_candidates(sdp)
        await self.client.signal(
            {"description": {"type": kind, "sdp": bare}, "session": self.session, "fresh": fresh}
        )
        for c in candidates:
            await self.client.signal({"candidate": c, "session": self.session})
            self.sent_candidates += 1

    async def call(self) -> None:
        """The doctor's fresh offer (aiortc gathers first; candidates are then trickled)."""
        self.session = uuid.uuid4().hex[:12]
        await self.pc.setLocalDescription(await self.pc.createOffer())
        await self._send_description(self.pc.localDescription.sdp, "offer", fresh=True)

    async def _signals(self) -> None:
        while True:
            message = await self.client.next_signal(within=3600)
            try:
                await self._handle(message.get("data") or {})
            except Exception as exc:
                self.errors.append(exc)

    async def _handle(self, data: dict[str, Any]) -> None:
        if "description" in data:
            d = data["description"]
            restart = self._is_restart(d)
            if d["type"] == "offer" and restart:
                await self._answer_restart(d["sdp"])
            elif d["type"] == "offer":
                self.session = data.get("session")
                await self.pc.setRemoteDescription(RTCSessionDescription(d["sdp"], "offer"))
                await self.pc.setLocalDescription(await self.pc.createAnswer())
                await self._send_description(self.pc.localDescription.sdp, "answer", fresh=False)
            elif d["type"] == "answer" and restart:
                await self._accept_restart_answer(d["sdp"])
            elif d["type"] == "answer":
                await self.pc.setRemoteDescription(RTCSessionDescription(d["sdp"], "answer"))
        elif data.get("candidate") and data.get("session") == self.session:
            self.received_candidates += 1
            c = data["candidate"]
            pending = self._restart[2] if self._restart is not None else None
            if pending is not None and c.get("usernameFragment") == pending.remote_username:
                await pending.add_remote_candidate(candidate_to_aioice(_candidate(c)))
            else:
                await self.pc.addIceCandidate(_candidate(c))
        elif data.get("endOfCandidates") and self._restart is not None:
            await self._restart[2].add_remote_candidate(None)

    def _is_restart(self, description: dict[str, Any]) -> bool:
        remote = self.pc.remoteDescription
        if remote is None or self.pc.localDescription is None:
            return False
        if description["type"] == "answer":
            return self._restart is not None
        return ice_credentials(description["sdp"]) != ice_credentials(remote.sdp)

    # ------------------------------------------------------------ ICE restart

    def _transport(self) -> RTCIceTransport:
        transport = self.pc.getTransceivers()[0].receiver.transport.transport
        assert isinstance(transport, RTCIceTransport)
        return transport

    async def _new_connection(self) -> tuple[RTCIceTransport, Connection, Connection]:
        transport = self._transport()
        old = transport._connection
        new = Connection(ice_controlling=old.ice_controlling, components=1)
        await new.gather_candidates()
        # The DTLS reader waits on the old connection's queue: share it, so datagrams arriving
        # on the new pair reach the same DTLS session.
        new._queue = old._queue
        self._restart = (transport, old, new)
        self._restarted.clear()
        return transport, old, new

    async def _send_restart(self, kind: str, new: Connection) -> None:
        assert self.pc.localDescription is not None
        bare, _ = split_candidates(self.pc.localDescription.sdp)
        sdp = with_credentials(bare, new.local_username, new.local_password)
        await self.client.signal(
            {"description": {"type": kind, "sdp": sdp}, "session": self.session, "fresh": False}
        )
        for c in new.local_candidates:
            candidate = candidate_from_aioice(c)
            await self.client.signal(
                {
                    "candidate": {
                        "candidate": "candidate:" + candidate_to_sdp(candidate),
                        "sdpMid": "0",
                        "sdpMLineIndex": 0,
                        "usernameFragment": new.local_username,
                    },
                    "session": self.session,
                }
            )
            self.sent_candidates += 1
        await self.client.signal({"endOfCandidates": True, "session": self.session})

    async def restart_ice(self, *, within: float = 20.0) -> None:
        """The caller restarts ICE through signalling and waits until media moved over."""
        _, _, new = await self._new_connection()
        await self._send_restart("offer", new)
        await asyncio.wait_for(self._restarted.wait(), within)

    async def _answer_restart(self, sdp: str) -> None:
        _, _, new = await self._new_connection()
        new.remote_username, new.remote_password = ice_credentials(sdp)
        await self._send_restart("answer", new)
        self._tasks.append(asyncio.create_task(self._complete_restart()))

    async def _accept_restart_answer(self, sdp: str) -> None:
        assert self._restart is not None
        new = self._restart[2]
        new.remote_username, new.remote_password = ice_credentials(sdp)
        self._tasks.append(asyncio.create_task(self._complete_restart()))

    async def wait_restarted(self, within: float = 20.0) -> None:
        await asyncio.wait_for(self._restarted.wait(), within)

    async def _complete_restart(self) -> None:
        assert self._restart is not None
        transport, old, new = self._restart
        try:
            await new.connect()
        except Exception as exc:
            self.errors.append(exc)
            return
        transport._connection = new
        transport._recv = new.recv
        transport._send = new.send
        transport.iceGatherer._connection = new
        monitor = transport._RTCIceTransport__monitor_task  # type: ignore[attr-defined]
        if monitor is not None:
            monitor.cancel()
        transport._RTCIceTransport__monitor_task = asyncio.ensure_future(  # type: ignore[attr-defined]
            transport._monitor()
        )
        old._queue = asyncio.Queue()  # closing the old connection must not wake the DTLS reader
        await old.close()
        self._restart = None
        self.old_connection = old
        self.restarts += 1
        self._restarted.set()

    @property
    def ice_connection(self) -> Connection:
        return self._transport()._connection


__all__ = ["Candidate", "Peer", "SmallVideoTrack"]
