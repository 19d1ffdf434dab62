// The video visit: WebRTC media peer to peer, signalling over the clinic's websocket.
// Vanilla JavaScript, no external assets. Protocol: docs/video.md.
//
// Roles: the doctor makes offers (a fresh one per peer connection, ICE restarts later); the
// patient answers, and asks the doctor for an ICE restart when its connection fails.
(() => {
  "use strict";

  const root = document.getElementById("visit");
  if (!root) return;
  const appointment = root.dataset.appointment;
  const role = root.dataset.role;
  const peerRole = role === "doctor" ? "patient" : "doctor";
  const $ = (id) => document.getElementById(id);
  const localVideo = $("local-video");
  const remoteVideo = $("remote-video");
  const notice = $("visit-notice");

  // Close codes after which reconnecting cannot help (see protocol.CloseCode).
  const FINAL = new Map([
    [1000, "The visit connection was closed."],
    [4401, "Your join link expired or is not valid. Reload the page to join again."],
    [4403, "You may not join this visit."],
    [4404, "This visit does not exist."],
    [4408, "This visit is not open for joining now."],
    [4409, "You joined this visit in another tab or window."],
    [4410, "This visit has ended."],
  ]);

  let ws = null;
  let pc = null;
  let session = null; // id of the current peer connection's negotiation, chosen by the doctor
  let localStream = null;
  let iceServers = [];
  let state = { admitted: false, ended: false, present: {} };
  let attempt = 0;
  let closedForGood = false;
  let queued = []; // remote candidates that arrived before the remote description
  let disconnectedTimer = null;
  let restartRequested = false;

  function say(text, kind) {
    notice.textContent = text;
    notice.className = "notice" + (kind ? " " + kind : "");
  }

  function mediaProblem(text) {
    const box = $("media-error");
    box.textContent = text;
    box.hidden = false;
    root.dataset.media = "refused";
  }

  function setSignalling(text) {
    $("sig-state").textContent = text;
    root.dataset.signalling = text;
  }

  function setConnection(text) {
    $("conn-state").textContent = text;
    root.dataset.connection = text;
  }

  // ---------------------------------------------------------------- camera and microphone

  async function startMedia() {
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      mediaProblem("This browser cannot use a camera here (a secure https:// page is needed).");
      localStream = new MediaStream();
      return;
    }
    try {
      localStream = await navigator.mediaDevices.getUserMedia({ audio: true, video: true });
      localVideo.srcObject = localStream;
      root.dataset.media = "on";
    } catch (err) {
      // Join anyway, receive-only: the other side's video still shows here.
      localStream = new MediaStream();
      const name = err && err.name;
      if (name === "NotAllowedError" || name === "SecurityError") {
        mediaProblem(
          "Camera and microphone access was refused. Allow them for this site in the " +
            "browser's settings and reload the page; until then the other side cannot see or hear you.",
        );
      } else if (name === "NotFoundError" || name === "OverconstrainedError") {
        mediaProblem("No camera or microphone was found. Connect one and reload the page.");
      } else if (name === "NotReadableError") {
        mediaProblem("The camera or microphone is in use by another application.");
      } else {
        mediaProblem("The camera or microphone could not be started (" + name + ").");
      }
    }
  }

  function toggle(kind, button, onText, offText) {
    const tracks = localStream ? localStream.getTracks().filter((t) => t.kind === kind) : [];
    if (!tracks.length) return;
    const enabled = !tracks[0].enabled;
    tracks.forEach((t) => (t.enabled = enabled));
    button.setAttribute("aria-pressed", String(!enabled));
    button.textContent = enabled ? onText : offText;
  }

  $("toggle-mic").addEventListener("click", (e) =>
    toggle("audio", e.currentTarget, "Mute", "Unmute"),
  );
  $("toggle-cam").addEventListener("click", (e) =>
    toggle("video", e.currentTarget, "Turn camera off", "Turn camera on"),
  );
  $("leave").addEventListener("click", () => {
    closedForGood = true;
    send({ type: "leave" });
    teardown();
    window.location.href = "/appointments/" + appointment;
  });
  if (role === "doctor") {
    $("admit").addEventListener("click", () => send({ type: "admit" }));
    $("end").addEventListener("click", () => {
      if (window.confirm("End the visit for both of you? The appointment will be marked completed.")) {
        send({ type: "end" });
      }
    });
  }

  // ---------------------------------------------------------------- signalling websocket

  async function fetchTicket() {
    const r = await fetch("/api/v1/visits/" + appointment + "/join", {
      credentials: "same-origin",
      headers: { Accept: "application/json" },
    });
    if (!r.ok) {
      let message = "The visit could not be joined (" + r.status + ").";
      try {
        message = (await r.json()).error.message || message;
      } catch (_) {
        /* not JSON: keep the generic message */
      }
      const error = new Error(message);
      error.final = r.status >= 400 && r.status < 500 && r.status !== 429;
      throw error;
    }
    return r.json();
  }

  function reconnectLater() {
    // Exponential backoff with jitter: 0.25 s, 0.5 s, 1 s … at most 8 s.
    const delay = Math.min(8000, 250 * 2 ** attempt) * (0.5 + Math.random() / 2);
    attempt += 1;
    setSignalling("reconnecting");
    setTimeout(connect, delay);
  }

  async function connect() {
    if (closedForGood) return;
    setSignalling(attempt ? "reconnecting" : "connecting");
    let ticket;
    try {
      ticket = await fetchTicket();
    } catch (err) {
      if (err.final) {
        closedForGood = true;
        setSignalling("closed");
        say(err.message, "error");
      } else {
        reconnectLater();
      }
      return;
    }
    iceServers = ticket.ice_servers;
    const scheme = window.location.protocol === "https:" ? "wss:" : "ws:";
    const url =
      scheme + "//" + window.location.host + ticket.websocket_path +
      "?token=" + encodeURIComponent(ticket.token);
    const socket = new WebSocket(url);
    ws = socket;
    socket.onopen = () => {
      attempt = 0;
      setSignalling("connected");
    };
    socket.onmessage = (event) => {
      let message;
      try {
        message = JSON.parse(event.data);
      } catch (_) {
        return;
      }
      onMessage(message).catch((err) => console.error("visit:", err));
    };
    socket.onclose = (event) => {
      if (ws === socket) ws = null;
      if (closedForGood) return;
      if (FINAL.has(event.code)) {
        closedForGood = true;
        setSignalling("closed");
        if (event.code === 4410) {
          finished();
        } else if (event.code !== 1000) {
          say(event.reason || FINAL.get(event.code), "error");
        }
        return;
      }
      // Dropped, or the server is going away (a deploy): media keeps flowing peer to peer
      // while we reconnect, to whichever instance the router picks, and resume.
      reconnectLater();
    };
  }

  function send(message) {
    if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(message));
  }

  function signal(data) {
    send({ type: "signal", data });
  }

  async function onMessage(m) {
    if (m.type === "welcome") {
      await applyState(m, true);
    } else if (m.type === "state") {
      await applyState(m, false);
    } else if (m.type === "signal") {
      await onSignal(m.data || {});
    } else if (m.type === "ended") {
      finished();
    } else if (m.type === "error") {
      say(m.message, "warn");
    }
    // Unknown types come from a newer release: ignore them.
  }

  function finished() {
    closedForGood = true;
    teardown();
    say("The visit has ended.");
    setTimeout(() => (window.location.href = "/appointments/" + appointment), 1500);
  }

  function describe() {
    const here = !!state.present[peerRole];
    $("peer-state").textContent = here ? "here" : "not here";
    root.dataset.admitted = String(state.admitted);
    if (role === "patient") {
      if (!state.admitted) say("You are in the waiting room. The doctor will let you in shortly.");
      else if (!here) say("The doctor is not connected right now; please wait.");
      else if (notice.textContent.indexOf("waiting room") >= 0 || notice.textContent.indexOf("not connected") >= 0)
        say("You are in the visit.");
    } else {
      const admit = $("admit");
      admit.disabled = !(here && !state.admitted);
      if (!here) say(state.admitted ? "The patient is not connected right now." : "The patient has not arrived yet.");
      else if (!state.admitted) say("The patient is waiting. Admit them when you are ready.");
      else say("The patient is in the visit.");
    }
  }

  async function applyState(s, welcome) {
    const peerWasHere = !!state.present[peerRole];
    state = { admitted: !!s.admitted, ended: !!s.ended, present: s.present || {} };
    describe();
    if (state.ended) return finished();
    const peerHere = !!state.present[peerRole];
    if (!state.admitted || !peerHere) return;
    const working = pc && ["connected", "completed", "checking", "new"].includes(pc.iceConnectionState);
    if (role === "doctor") {
      if (!pc) await offer(false);
      else if (!working) await offer(true);
    } else if ((welcome || !peerWasHere) && !working) {
      // We have no call, or a dead one: ask the doctor for a fresh offer.
      signal({ ready: true });
    }
  }

  // ---------------------------------------------------------------- the peer connection

  function newPeerConnection(id) {
    if (pc) pc.close();
    session = id;
    queued = [];
    const conn = new RTCPeerConnection({ iceServers });
    pc = conn;
    for (const track of localStream.getTracks()) conn.addTrack(track, localStream);
    if (!localStream.getVideoTracks().length) conn.addTransceiver("video", { direction: "recvonly" });
    if (!localStream.getAudioTracks().length) conn.addTransceiver("audio", { direction: "recvonly" });
    conn.ontrack = (event) => {
      if (remoteVideo.srcObject !== event.streams[0]) remoteVideo.srcObject = event.streams[0] || new MediaStream([event.track]);
    };
    conn.onicecandidate = (event) => {
      if (event.candidate) signal({ candidate: event.candidate.toJSON(), session: id });
    };
    conn.onconnectionstatechange = () => {
      if (pc !== conn) return;
      setConnection(conn.connectionState);
    };
    conn.oniceconnectionstatechange = () => {
      if (pc !== conn) return;
      const s = conn.iceConnectionState;
      clearTimeout(disconnectedTimer);
      if (s === "connected" || s === "completed") restartRequested = false;
      if (s === "failed") restartIce();
      // "disconnected" may heal by itself; restart if it lasts.
      if (s === "disconnected") disconnectedTimer = setTimeout(() => pc === conn && restartIce(), 4000);
    };
    setConnection("connecting");
    return conn;
  }

  function restartIce() {
    if (!state.admitted || !state.present[peerRole]) return; // the peer's return triggers it
    if (role === "doctor") offer(true);
    else if (!restartRequested) {
      restartRequested = true;
      signal({ restart: true, session });
    }
  }

  async function offer(iceRestart) {
    if (!pc || !iceRestart) newPeerConnection(Math.random().toString(36).slice(2));
    const conn = pc;
    if (iceRestart) conn.restartIce();
    const description = await conn.createOffer(iceRestart ? { iceRestart: true } : {});
    if (pc !== conn) return;
    await conn.setLocalDescription(description);
    signal({
      description: { type: conn.localDescription.type, sdp: conn.localDescription.sdp },
      session,
      fresh: !iceRestart,
    });
  }

  async function onSignal(data) {
    if (data.ready && role === "doctor") return offer(false);
    if (data.restart && role === "doctor") return pc && data.session === session ? offer(true) : offer(false);
    if (data.description) {
      const d = data.description;
      if (d.type === "offer" && role === "patient") {
        if (data.fresh || !pc || data.session !== session) newPeerConnection(data.session);
        const conn = pc;
        await conn.setRemoteDescription(d);
        for (const c of queued.splice(0)) await conn.addIceCandidate(c).catch(() => {});
        await conn.setLocalDescription(await conn.createAnswer());
        signal({
          description: { type: conn.localDescription.type, sdp: conn.localDescription.sdp },
          session,
        });
      } else if (d.type === "answer" && role === "doctor") {
        if (!pc || data.session !== session || pc.signalingState !== "have-local-offer") return;
        await pc.setRemoteDescription(d);
        for (const c of queued.splice(0)) await pc.addIceCandidate(c).catch(() => {});
      }
      return;
    }
    if (data.candidate && pc && data.session === session) {
      if (!pc.remoteDescription) queued.push(data.candidate);
      else await pc.addIceCandidate(data.candidate).catch(() => {});
    }
  }

  function teardown() {
    if (pc) pc.close();
    pc = null;
    setConnection("closed");
    if (ws) ws.close(1000);
    ws = null;
    if (localStream) localStream.getTracks().forEach((t) => t.stop());
  }

  window.addEventListener("pagehide", () => {
    if (ws) ws.close(1000);
  });

  startMedia().then(connect);
})();
