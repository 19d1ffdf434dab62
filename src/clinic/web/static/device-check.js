// The device check before a video visit: camera preview, microphone level, speaker test.
// Each device reports on its own (data-camera / data-mic / data-speaker on #device-check and a
// sentence in its status line), so a missing webcam does not hide a working microphone.
"use strict";

(function () {
  const root = document.getElementById("device-check");
  if (!root) return;
  const $ = (id) => document.getElementById(id);
  const streams = [];

  function report(device, state, message) {
    root.dataset[device] = state;
    const line = $(device + "-status");
    line.textContent = message;
    line.classList.toggle("error", state !== "ok" && state !== "played" && state !== "checking");
  }

  function explain(err, what) {
    const name = err && err.name;
    if (name === "NotAllowedError" || name === "SecurityError" || name === "PermissionDeniedError") {
      return ["denied", "Access to your " + what + " is blocked. Allow it in your browser " +
        "(the camera icon in the address bar, or the site settings), then press Start again."];
    }
    if (name === "NotFoundError" || name === "DevicesNotFoundError" || name === "OverconstrainedError") {
      return ["missing", "No " + what + " was found. Connect one, or use another device " +
        "(a phone or tablet works too), then press Start again."];
    }
    if (name === "NotReadableError" || name === "TrackStartError") {
      return ["busy", "Your " + what + " is in use by another program. Close it (another " +
        "video call, for example), then press Start again."];
    }
    return ["failed", "Your " + what + " could not be started (" + (name || "unknown error") + ")."];
  }

  async function open(constraints, device, what) {
    try {
      const stream = await navigator.mediaDevices.getUserMedia(constraints);
      streams.push(stream);
      return stream;
    } catch (err) {
      const [state, message] = explain(err, what);
      report(device, state, message);
      return null;
    }
  }

  async function checkCamera() {
    report("camera", "checking", "Starting your camera…");
    const stream = await open({ video: true }, "camera", "camera");
    if (!stream) return;
    const video = $("camera-preview");
    video.srcObject = stream;
    try { await video.play(); } catch (_) { /* autoplay of a muted preview is allowed */ }
    report("camera", "ok", "Your camera works: you should see yourself above.");
  }

  async function checkMicrophone() {
    report("mic", "checking", "Starting your microphone…");
    const stream = await open({ audio: true }, "mic", "microphone");
    if (!stream) return;
    const context = new AudioContext();
    const analyser = context.createAnalyser();
    analyser.fftSize = 1024;
    context.createMediaStreamSource(stream).connect(analyser);
    const samples = new Float32Array(analyser.fftSize);
    const meter = $("mic-level");
    let heard = false;
    report("mic", "ok", "Your microphone works. Say something: the bar moves when it hears you.");
    function tick() {
      analyser.getFloatTimeDomainData(samples);
      let sum = 0;
      for (const s of samples) sum += s * s;
      const level = Math.min(1, Math.sqrt(sum / samples.length) * 4);
      meter.value = level;
      if (level > 0.01 && !heard) {
        heard = true;
        root.dataset.micHeard = "true";
      }
      if (streams.length) requestAnimationFrame(tick);
    }
    if (context.state === "suspended") await context.resume();
    tick();
  }

  function playTone() {
    const context = new AudioContext();
    const tone = context.createOscillator();
    const gain = context.createGain();
    tone.frequency.value = 440;
    gain.gain.value = 0.2;
    tone.connect(gain).connect(context.destination);
    tone.start();
    tone.stop(context.currentTime + 1);
    tone.onended = () => context.close();
    report("speaker", "played", "A tone played for one second. If you did not hear it, turn " +
      "up the volume or choose other speakers or headphones, then play it again.");
  }

  async function start() {
    for (const s of streams.splice(0)) s.getTracks().forEach((t) => t.stop());
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      const message = "This browser cannot use a camera or microphone here. Open the clinic " +
        "over https in a current browser (Chrome, Edge, Firefox or Safari).";
      report("camera", "unsupported", message);
      report("mic", "unsupported", message);
      return;
    }
    await checkCamera();
    await checkMicrophone();
  }

  $("start-check").addEventListener("click", start);
  $("play-tone").addEventListener("click", playTone);
  window.addEventListener("pagehide", () => {
    for (const s of streams.splice(0)) s.getTracks().forEach((t) => t.stop());
  });
  root.dataset.ready = "true";
})();
