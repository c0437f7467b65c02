// Metal player: WHEP playback with input over a data channel.
"use strict";

(function () {
  const params = new URLSearchParams(location.hash.slice(1));
  const cfg = Object.assign({
    whep: params.get("whep") || new URL("whep", location.href.split("#")[0]).href,
    token: params.get("token") || "",
    iceServers: params.get("ice") ? JSON.parse(params.get("ice")) : [],
    iceTransportPolicy: params.get("relay") === "1" ? "relay" : "all",
    stats: params.get("stats") === "1",
    manual: params.get("manual") === "1",
    // fixed=1: the remote screen keeps its size instead of following this window.
    fixed: params.get("fixed") === "1",
    // keys=physical: keys by place always; keys=layout: never (auto: under pointer lock).
    keys: params.get("keys") || "auto",
  }, window.METAL_CONFIG || {});

  // Build the player's elements unless the page has them.
  if (!document.getElementById("video")) {
    document.body.insertAdjacentHTML("beforeend", `
<video id="video" autoplay playsinline muted tabindex="0"></video>
<div id="status">Loading…</div>
<div id="stats" hidden></div>
<img id="remote-pointer" alt="" hidden>
<div id="bar">
  <button id="unmute" title="Turn sound on or off">Sound off</button>
  <button id="lock" title="Capture the mouse for games (Esc releases it)">Lock mouse</button>
  <button id="togglestats" title="Show or hide statistics">Stats</button>
  <button id="fullscreen" title="Fullscreen">Fullscreen</button>
  <button id="keyboard" title="On-screen keyboard (touch screens)" hidden>Keyboard</button>
</div>
<input id="softkeys" autocapitalize="off" autocomplete="off" autocorrect="off" spellcheck="false" aria-label="Keyboard input">`);
  }
  const video = document.getElementById("video");
  const statusEl = document.getElementById("status");
  const statsEl = document.getElementById("stats");
  const state = { pc: null, dc: null, location: null, retries: 0, lastBytes: 0, lastTime: 0, pointerLocked: false, stopped: false };
  // Exposed for tests and the gateway's page.
  window.metal = { state, cfg, setStatus, connect, stop, reconnect: () => scheduleReconnect() };

  function setStatus(text) {
    statusEl.textContent = text;
    statusEl.classList.toggle("hidden", !text);
    window.metal.status = text;
  }

  // The remote pointer: the CSS cursor for the player, whose own mouse is
  // the pointer; for a spectator (who alone gets "pointer" messages, the
  // first as its channel opens) an image at the pointer's position, and
  // its own mouse stays the default arrow.
  const pointerEl = document.getElementById("remote-pointer");
  const cursor = { seq: 0, hx: 0, hy: 0, hidden: false, spectator: false };
  const pngURL = /^data:image\/png;base64,[A-Za-z0-9+/]*={0,2}$/;
  function drawCursor(m) {
    cursor.seq = Number(m.seq);
    window.metal.cursor = m;
    const img = typeof m.image === "string" && pngURL.test(m.image) ? m.image : "";
    cursor.hx = Math.max(0, Math.min(255, m.hot_x | 0));
    cursor.hy = Math.max(0, Math.min(255, m.hot_y | 0));
    cursor.hidden = !!m.hidden;
    if (img) pointerEl.src = img; else pointerEl.removeAttribute("src");
    if (!cursor.spectator) video.style.cursor = m.hidden ? "none" : img ? `url("${img}") ${cursor.hx} ${cursor.hy}, default` : "default";
    placePointer();
  }
  function movePointer(x, y) {
    if (!(x >= 0 && x <= 1 && y >= 0 && y <= 1)) return;
    cursor.spectator = true;
    video.style.cursor = "default";
    window.metal.pointer = { x, y };
    placePointer();
  }
  // placePointer puts the spectator's pointer image where the pointer is in
  // the frame as drawn (object-fit: contain letterboxes it).
  function placePointer() {
    const p = window.metal.pointer;
    if (!cursor.spectator || !p) return;
    const r = video.getBoundingClientRect(), vw = video.videoWidth, vh = video.videoHeight;
    const shown = !cursor.hidden && pointerEl.getAttribute("src") && vw > 0 && vh > 0;
    pointerEl.hidden = !shown;
    if (!shown) return;
    const scale = Math.min(r.width / vw, r.height / vh), w = vw * scale, h = vh * scale;
    const left = r.left + (r.width - w) / 2 + p.x * w - cursor.hx, top = r.top + (r.height - h) / 2 + p.y * h - cursor.hy;
    pointerEl.style.transform = `translate(${left}px, ${top}px)`;
  }
  window.addEventListener("resize", placePointer);
  video.addEventListener("loadedmetadata", placePointer);
  video.addEventListener("resize", placePointer);

  async function connect() {
    if (state.stopped) return;
    // The streamer's own page (a laptop link) carries a token; the gateway's
    // pages carry none: the gateway authorises with its cookie or share link
    // and forwards the offer.
    if (!cfg.token && !cfg.gateway) { setStatus("No session token: open the link you were given."); return; }
    if (state.retries && cfg.refresh) {
      // A reconnect: TURN credentials are short-lived, and the relay keeps
      // an expired one only for the client address that opened it (a new
      // connection may come from another), so the page asks for fresh
      // ones first.
      try { await cfg.refresh(); } catch (_) { /* the old ones, then */ }
      if (state.stopped) return;
    }
    state.connectStartedAt = performance.now();
    state.postSentAt = state.firstFrameAt = 0;
    cursor.seq = 0; // a new streamer (a failover) numbers from 1
    remote.asked = ""; // a new channel: ask again
    pads.last = []; // and send the pads' state again
    setStatus(state.retries ? `Reconnecting (try ${state.retries + 1})…` : "Connecting…");
    const pc = new RTCPeerConnection({ iceServers: cfg.iceServers, iceTransportPolicy: cfg.iceTransportPolicy });
    state.pc = pc;
    pc.addTransceiver("video", { direction: "recvonly" });
    pc.addTransceiver("audio", { direction: "recvonly" });
    const dc = pc.createDataChannel("input", { ordered: true });
    state.dc = dc;
    // The clipboard has a channel of its own (texts up to 1 MiB); the
    // streamer closes a spectator's.
    const cdc = pc.createDataChannel("clipboard", { ordered: true });
    state.cdc = cdc;
    cdc.onmessage = (e) => onClipboardMessage(String(e.data));
    // A new streamer (a failover) holds none of what the last one was sent.
    cdc.onopen = () => { clip.inbuf = ""; clip.current = null; clip.pending = 0; syncClipboard(); };
    dc.onmessage = (e) => {
      try {
        const m = JSON.parse(e.data);
        if (m.type === "error") { window.metal.lastInputError = m.error; console.warn("input refused:", m.error); }
        // The X cursor, drawn by the browser at input latency (the capture
        // leaves it out); hidden when the application hides it. Messages
        // are numbered: an older one than drawn is ignored.
        if (m.type === "cursor" && Number(m.seq) > cursor.seq) drawCursor(m);
        // Spectators: where the pointer is (their own mouse moves nothing).
        if (m.type === "pointer") movePointer(Number(m.x), Number(m.y));
        // The screen's size, and whether this player may ask for another.
        if (m.type === "screen") onScreen(m);
      } catch (_) { /* ignore */ }
    };
    pc.ontrack = (e) => {
      if (e.track.kind === "video") {
        video.srcObject = e.streams[0] || new MediaStream([e.track]);
        // When the first frame is shown (benchmarks: navigation, the
        // performance clock's 0, and WHEP POST to first frame).
        video.requestVideoFrameCallback?.(() => { if (!state.firstFrameAt) state.firstFrameAt = performance.now(); });
      } else if (video.srcObject) {
        video.srcObject.addTrack(e.track);
      }
    };
    pc.oniceconnectionstatechange = () => {
      const s = pc.iceConnectionState;
      if (s === "checking") setStatus("Connecting…");
      if (s === "connected" || s === "completed") { state.retries = 0; if (/interrupted/.test(window.metal.status || "")) setStatus(""); }
      if (pc !== state.pc) return;
      // A drop or a network change: first an ICE restart on this peer
      // (same session, tracks and channels), then, if ICE does not come
      // back, a new peer on the same session.
      if (s === "failed") recoverIce(pc);
      if (s === "disconnected") {
        setStatus("Connection interrupted…");
        setTimeout(() => { if (pc === state.pc && !iceUp(pc)) recoverIce(pc); }, 2000);
      }
    };
    try {
      const gathered = gatheringDone(pc, 2000);
      await pc.setLocalDescription(await pc.createOffer());
      await gathered;
      const headers = { "Content-Type": "application/sdp" };
      if (cfg.token) headers.Authorization = "Bearer " + cfg.token;
      state.postSentAt = performance.now(); // benchmarks: WHEP POST → first frame
      const resp = await fetch(cfg.whep, {
        method: "POST", headers, credentials: "same-origin",
        body: pc.localDescription.sdp,
      });
      const text = await resp.text();
      if (resp.status !== 201) {
        setStatus(`Stream refused (${resp.status}): ${text.trim()}`);
        window.metal.error = text.trim();
        if (resp.status >= 500 || resp.status === 429) scheduleReconnect(); // busy or away: again, with backoff
        return;
      }
      state.location = new URL(resp.headers.get("Location"), cfg.whep).href;
      await pc.setRemoteDescription({ type: "answer", sdp: text });
      setStatus("Starting stream…");
    } catch (err) {
      setStatus("Connection failed: " + err.message);
      scheduleReconnect();
    }
  }

  // gatheringDone, armed before setLocalDescription, resolves when the
  // gathering that description starts is over (its last, null, candidate,
  // or the state turning complete), or after ms: right after an ICE
  // restart's setLocalDescription the state may still read the last
  // gathering's "complete".
  function gatheringDone(pc, ms) {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(t);
        pc.removeEventListener("icecandidate", onCandidate);
        pc.removeEventListener("icegatheringstatechange", onState);
        resolve();
      };
      const onCandidate = (e) => { if (!e.candidate) done(); };
      const onState = () => { if (pc.iceGatheringState === "complete") done(); };
      const t = setTimeout(done, ms);
      pc.addEventListener("icecandidate", onCandidate);
      pc.addEventListener("icegatheringstatechange", onState);
    });
  }

  // ICE restart over WHEP (PATCH with an SDP fragment: streamer/icerestart.go).
  const iceUp = (pc) => pc.iceConnectionState === "connected" || pc.iceConnectionState === "completed";
  const fragLines = (sdp, re) => sdp.split(/\r?\n/).filter((l) => re.test(l));
  async function restartIce() {
    const pc = state.pc;
    if (!pc || !state.location || state.restartingIce) return false;
    state.restartingIce = true;
    try {
      if (cfg.refresh) {
        // Fresh TURN credentials: the old ones may have expired (5 s at
        // most: the network may be the thing that is down).
        try {
          await Promise.race([cfg.refresh(), new Promise((_, no) => setTimeout(() => no(new Error("timeout")), 5000))]);
          pc.setConfiguration(Object.assign(pc.getConfiguration(), { iceServers: cfg.iceServers }));
        } catch (_) { /* the old ones */ }
      }
      pc.restartIce();
      const gathered = gatheringDone(pc, 2000);
      await pc.setLocalDescription(await pc.createOffer());
      await gathered;
      // The bundle's transport is the first section's: its credentials
      // and candidates, each once.
      const section = pc.localDescription.sdp.split(/\r?\nm=/)[1] || "";
      const mid = (fragLines(section, /^a=mid:/)[0] || "a=mid:0").slice(6);
      const frag = [...fragLines(pc.localDescription.sdp, /^a=ice-(ufrag|pwd):/).slice(0, 2), "m=video 9 UDP/TLS/RTP/SAVPF 0", "a=mid:" + mid,
        ...new Set(fragLines(section, /^a=candidate:/))].join("\r\n") + "\r\n";
      const headers = { "Content-Type": "application/trickle-ice-sdpfrag" };
      if (cfg.token) headers.Authorization = "Bearer " + cfg.token;
      const resp = await fetch(state.location, { method: "PATCH", headers, credentials: "same-origin", body: frag, signal: AbortSignal.timeout(8000) });
      const text = await resp.text();
      if (resp.status !== 200) throw new Error(`PATCH ${resp.status}: ${text.trim()}`);
      if (pc !== state.pc) return false;
      // The last answer with the streamer's new credentials and candidates.
      const ufrag = fragLines(text, /^a=ice-ufrag:/)[0], pwd = fragLines(text, /^a=ice-pwd:/)[0];
      const cands = fragLines(text, /^a=candidate:/);
      if (!ufrag || !pwd) throw new Error("PATCH answer without ICE credentials");
      const out = [];
      let first = true;
      for (const line of pc.currentRemoteDescription.sdp.split(/\r?\n/)) {
        if (!line || /^a=(candidate:|end-of-candidates)/.test(line)) continue;
        if (line.startsWith("a=ice-ufrag:")) { out.push(ufrag); continue; }
        if (line.startsWith("a=ice-pwd:")) { out.push(pwd); continue; }
        out.push(line);
        if (first && line.startsWith("a=mid:")) { first = false; out.push(...cands, "a=end-of-candidates"); }
      }
      await pc.setRemoteDescription({ type: "answer", sdp: out.join("\r\n") + "\r\n" });
      window.metal.iceRestarts = (window.metal.iceRestarts || 0) + 1;
      return true;
    } catch (err) {
      console.warn("ICE restart failed:", err);
      window.metal.lastIceRestartError = String(err.message || err);
      return false;
    } finally {
      state.restartingIce = false;
    }
  }
  window.metal.restartIce = restartIce;
  async function recoverIce(pc) {
    if (pc !== state.pc || pc.recovering || state.stopped) return;
    pc.recovering = true;
    setStatus("Connection interrupted; restarting ICE…");
    // Whatever the restart does, ICE must be back within 15 s, else a new
    // peer on the same session.
    const watchdog = setTimeout(() => { if (pc === state.pc && !iceUp(pc)) scheduleReconnect(); }, 15000);
    const ok = await restartIce();
    // A few seconds for ICE to come back on the new credentials.
    setTimeout(() => {
      pc.recovering = false;
      if (pc !== state.pc) return;
      if (iceUp(pc)) { clearTimeout(watchdog); if (/interrupted/.test(window.metal.status || "")) setStatus(""); return; }
      clearTimeout(watchdog);
      scheduleReconnect();
    }, ok ? 6000 : 0);
  }
  // A network change (Wi-Fi to cellular, a new address) while ICE is
  // down: restart it at once rather than wait for the old path to time out.
  window.addEventListener("online", () => { if (state.pc && state.location && !iceUp(state.pc)) recoverIce(state.pc); });
  navigator.connection?.addEventListener?.("change", () => { if (state.pc && state.location && !iceUp(state.pc)) recoverIce(state.pc); });

  function scheduleReconnect() {
    if (state.stopped || state.reconnecting) return;
    state.reconnecting = true;
    teardown();
    const delay = Math.min(8000, 500 * 2 ** state.retries++);
    setStatus(`Connection lost; reconnecting in ${Math.round(delay / 1000)} s…`);
    setTimeout(() => { state.reconnecting = false; connect(); }, delay);
  }

  function teardown() {
    if (state.location) {
      const headers = cfg.token ? { "Authorization": "Bearer " + cfg.token } : {};
      fetch(state.location, { method: "DELETE", headers, credentials: "same-origin" }).catch(() => {});
      state.location = null;
    }
    if (state.pc) { state.pc.close(); state.pc = null; }
  }

  function stop() { state.stopped = true; teardown(); }
  window.addEventListener("pagehide", stop);

  video.addEventListener("playing", () => setStatus(""));

  // Stats overlay: fps, bitrate, RTT, decode time.
  async function stats() {
    const pc = state.pc;
    if (!pc) return;
    const report = await pc.getStats();
    let fps = 0, bytes = 0, decode = 0, frames = 0, rtt = 0, w = 0, h = 0, codec = "";
    report.forEach((s) => {
      if (s.type === "inbound-rtp" && s.kind === "video") {
        fps = s.framesPerSecond || 0; bytes = s.bytesReceived; frames = s.framesDecoded || 0;
        decode = frames ? 1000 * (s.totalDecodeTime || 0) / frames : 0; w = s.frameWidth; h = s.frameHeight;
        const c = report.get(s.codecId); codec = c ? c.mimeType : "";
      }
      if (s.type === "candidate-pair" && s.nominated && s.state === "succeeded") rtt = 1000 * (s.currentRoundTripTime || 0);
    });
    const now = performance.now();
    const kbps = state.lastTime ? (8 * (bytes - state.lastBytes)) / (now - state.lastTime) : 0;
    state.lastBytes = bytes; state.lastTime = now;
    window.metal.stats = { fps, kbps, rtt, decodeMs: decode, framesDecoded: frames, width: w, height: h, codec };
    statsEl.textContent = `${codec} ${w}x${h}\n${fps.toFixed(0)} fps  ${(kbps / 1000).toFixed(1)} Mbit/s\nRTT ${rtt.toFixed(1)} ms  decode ${decode.toFixed(1)} ms`;
  }
  setInterval(stats, 1000);
  statsEl.hidden = !cfg.stats;
  document.getElementById("togglestats").onclick = () => { statsEl.hidden = !statsEl.hidden; };
  // Fullscreen also locks the keyboard where the browser can (Chromium):
  // Esc, Ctrl+W and the like reach the session instead of the browser
  // (holding Esc leaves fullscreen).
  document.getElementById("fullscreen").onclick = () => {
    document.documentElement.requestFullscreen?.()
      .then(() => navigator.keyboard.lock())
      .then(() => { window.metal.keyboardLocked = true; })
      .catch(() => {}); // no Keyboard Lock API: fullscreen alone
  };
  document.addEventListener("fullscreenchange", () => {
    if (!document.fullscreenElement) { navigator.keyboard?.unlock?.(); window.metal.keyboardLocked = false; }
  });
  document.getElementById("unmute").onclick = (e) => { video.muted = !video.muted; e.target.textContent = video.muted ? "Sound off" : "Sound on"; };
  document.getElementById("lock").onclick = () => video.requestPointerLock?.();
  document.addEventListener("pointerlockchange", () => { state.pointerLocked = document.pointerLockElement === video; });

  // The remote screen follows this window: the player asks for its video
  // element's size in device pixels, once the streamer says it may (the
  // owner, unless the resolution is fixed), and again after the window or
  // fullscreen changes (debounced: a dragged edge asks once it stops). The
  // streamer fits the size within its bounds and restarts the encoder at
  // it; the peer stays.
  const remote = { width: 0, height: 0, resizable: false, asked: "" };
  function onScreen(m) {
    remote.width = m.width | 0; remote.height = m.height | 0; remote.resizable = !!m.resizable;
    state.owner = !!m.owner;
    syncClipboard();
    window.metal.screen = { width: remote.width, height: remote.height, resizable: remote.resizable, owner: state.owner };
    fitScreen();
  }
  function fitScreen() {
    if (!remote.resizable || cfg.fixed) return;
    const r = video.getBoundingClientRect(), dpr = window.devicePixelRatio || 1;
    const w = Math.round(r.width * dpr), h = Math.round(r.height * dpr);
    if (w < 1 || h < 1 || `${w}x${h}` === remote.asked) return;
    remote.asked = `${w}x${h}`;
    send({ type: "resize", width: w, height: h });
  }
  let fitTimer = 0;
  const fitSoon = () => { clearTimeout(fitTimer); fitTimer = setTimeout(fitScreen, 250); };
  window.addEventListener("resize", fitSoon);
  document.addEventListener("fullscreenchange", fitSoon);

  // Clipboard, both ways, as text (streamer/clipboard.go has the framing:
  // chunks starting "+" (more follow) or "=" (the last); "." says the
  // session holds what was sent, "!" why it does not). From the session:
  // written to the browser's clipboard (the async clipboard API, allowed
  // while the page has focus). To the session: the browser's clipboard when
  // the page gains focus, where the page may read it (the clipboard-read
  // permission granted), and the paste event's text when the player presses
  // a paste shortcut (Ctrl+V, Shift+Insert): the shortcut's keys wait until
  // the session holds the text, so the application pastes the new one.
  // current: the text the session holds as far as the page knows;
  // pending: texts sent and not yet answered ("." or "!").
  const clip = { inbuf: "", current: null, pending: 0, pasteKeys: null, pasteTimer: 0 };
  const MAX_CLIPBOARD = 1 << 20;
  function onClipboardMessage(d) {
    const kind = d[0], rest = d.slice(1);
    if (kind === "+") { clip.inbuf += rest; if (clip.inbuf.length > MAX_CLIPBOARD) clip.inbuf = ""; return; }
    if (kind === "=") {
      const text = clip.inbuf + rest;
      clip.inbuf = "";
      clip.current = text;
      window.metal.clipboard = text;
      navigator.clipboard?.writeText(text).catch(() => { /* no focus: kept for the next copy */ });
      return;
    }
    window.metal.onClipboard?.(kind); // tests: the order of acks and keys
    if (kind === "." || kind === "!") {
      clip.pending = Math.max(0, clip.pending - 1);
      if (kind === ".") window.metal.clipboardAcks = (window.metal.clipboardAcks || 0) + 1;
      else {
        window.metal.lastClipboardError = rest;
        // Answers come in the order the texts went: the last one's says
        // what the session holds.
        if (clip.pending === 0) clip.current = null;
        console.warn("clipboard refused:", rest);
      }
      // A paste shortcut waits for every text sent before it.
      if (clip.pending === 0) flushPaste();
    }
  }
  // sendClipboard sends text to the session; false when nothing was sent
  // (the session has it already, no channel, or over 1 MiB).
  function sendClipboard(text) {
    const dc = state.cdc;
    if (!dc || dc.readyState !== "open" || typeof text !== "string" || text === clip.current) return false;
    if (new TextEncoder().encode(text).length > MAX_CLIPBOARD) {
      window.metal.lastClipboardError = "clipboard text over 1 MiB: not sent";
      return false;
    }
    clip.current = text;
    clip.pending++;
    // 4096 UTF-16 units are at most 12 KiB of UTF-8; a chunk never ends
    // inside a surrogate pair.
    for (let i = 0; i < text.length || i === 0;) {
      let n = Math.min(4096, text.length - i);
      if (n > 0 && i + n < text.length && /[\ud800-\udbff]/.test(text[i + n - 1])) n--;
      dc.send((i + n < text.length ? "+" : "=") + text.slice(i, i + n));
      i += n;
      if (n === 0) break;
    }
    return true;
  }
  window.metal.sendClipboard = sendClipboard;
  async function syncClipboard() {
    if (!navigator.clipboard?.readText || !state.owner) return;
    try {
      if ((await navigator.permissions.query({ name: "clipboard-read" })).state !== "granted") return;
      sendClipboard(await navigator.clipboard.readText());
    } catch (_) { /* not allowed now */ }
  }
  window.addEventListener("focus", syncClipboard);
  const isPasteKey = (e) => ((e.key === "v" || e.key === "V") && (e.ctrlKey || e.metaKey)) || (e.key === "Insert" && e.shiftKey);
  function flushPaste() {
    clearTimeout(clip.pasteTimer);
    const keys = clip.pasteKeys || [];
    clip.pasteKeys = null;
    for (const m of keys) send(m);
  }
  document.addEventListener("paste", (e) => {
    e.preventDefault();
    const text = e.clipboardData && state.owner ? e.clipboardData.getData("text/plain") : "";
    clearTimeout(clip.pasteTimer);
    const sent = text && sendClipboard(text);
    // The keys wait for the session to answer every text sent (this one,
    // or one sent on focus just before): at most a second.
    if (sent || clip.pending > 0) clip.pasteTimer = setTimeout(flushPaste, 1000);
    else flushPaste();
  });

  // Gamepads: read at the display rate while one is connected, each pad's
  // state sent when it changes (the W3C standard layout: 17 buttons, 4
  // axes, rounded to 0.01), by the owner only (streamer/gamepad.go says
  // what the session makes of them). A pad that goes away is let go.
  const pads = { last: [], running: false };
  const round = (v) => Math.round(v * 100) / 100 || 0;
  function pollPads() {
    let any = false;
    for (const gp of (navigator.getGamepads ? navigator.getGamepads() : [])) {
      if (!gp || !gp.connected || gp.index > 3) continue;
      any = true;
      if (!state.owner) continue;
      const m = {
        type: "pad", index: gp.index,
        buttons: Array.from(gp.buttons).slice(0, 17).map((b) => round(Math.max(0, Math.min(1, b.pressed && !b.value ? 1 : b.value)))),
        axes: Array.from(gp.axes).slice(0, 4).map((a) => round(Math.max(-1, Math.min(1, a)))),
      };
      const key = JSON.stringify(m);
      if (key !== pads.last[gp.index] && state.dc && state.dc.readyState === "open") { pads.last[gp.index] = key; send(m); }
    }
    pads.running = any;
    if (any) requestAnimationFrame(pollPads);
  }
  window.addEventListener("gamepadconnected", () => { if (!pads.running) { pads.running = true; requestAnimationFrame(pollPads); } });
  window.addEventListener("gamepaddisconnected", (e) => {
    const i = e.gamepad ? e.gamepad.index : -1;
    if (i >= 0 && i <= 3 && state.owner) { pads.last[i] = ""; send({ type: "pad", index: i, buttons: [], axes: [] }); }
  });

  // Input.
  function send(msg) {
    window.metal.onSend?.(msg); // tests
    if (state.dc && state.dc.readyState === "open") state.dc.send(JSON.stringify(msg));
  }
  window.metal.send = send;

  const special = {
    Enter: 0xff0d, Backspace: 0xff08, Tab: 0xff09, Escape: 0xff1b, Delete: 0xffff, Home: 0xff50,
    ArrowLeft: 0xff51, ArrowUp: 0xff52, ArrowRight: 0xff53, ArrowDown: 0xff54, PageUp: 0xff55,
    PageDown: 0xff56, End: 0xff57, Insert: 0xff63, Shift: 0xffe1, Control: 0xffe3, Alt: 0xffe9,
    Meta: 0xffeb, CapsLock: 0xffe5, " ": 0x20,
  };
  function keysym(e) {
    if (special[e.key]) return special[e.key];
    if (/^F([1-9]|1[0-2])$/.test(e.key)) return 0xffbe + Number(e.key.slice(1)) - 1;
    if ([...e.key].length === 1) {
      const cp = e.key.codePointAt(0);
      return cp < 0x100 ? cp : 0x01000000 + cp;
    }
    return 0;
  }
  // Keys by place, for games: under pointer lock (or with #keys=physical;
  // never with #keys=layout) a printable key is sent as what the session's
  // US map has at its physical place (KeyboardEvent.code), so games that
  // read key places get WASD from an AZERTY keyboard's ZQSD. Typing text
  // (no lock) sends what the player's layout produced.
  const usPlaces = {
    Minus: "-_", Equal: "=+", BracketLeft: "[{", BracketRight: "]}", Backslash: "\\|", Semicolon: ";:",
    Quote: "'\"", Backquote: "`~", Comma: ",<", Period: ".>", Slash: "/?", Space: "  ",
    Digit1: "1!", Digit2: "2@", Digit3: "3#", Digit4: "4$", Digit5: "5%", Digit6: "6^", Digit7: "7&", Digit8: "8*", Digit9: "9(", Digit0: "0)",
  };
  function byPlace(e) {
    const mode = cfg.keys || "auto";
    if (mode === "layout" || (mode !== "physical" && !state.pointerLocked)) return 0;
    const letter = /^Key([A-Z])$/.exec(e.code || "");
    if (letter) return (e.shiftKey ? letter[1] : letter[1].toLowerCase()).charCodeAt(0);
    const pair = usPlaces[e.code];
    return pair ? pair.charCodeAt(e.shiftKey ? 1 : 0) : 0;
  }

  // What this page holds down, released when it loses focus: the keyup of
  // an Alt+Tab away (or a click on another window) never reaches the page,
  // and the session would keep the key or button held.
  const heldKeys = new Set(), heldButtons = new Set();
  for (const type of ["keydown", "keyup"]) {
    document.addEventListener(type, (e) => {
      const k = byPlace(e) || keysym(e);
      if (!k) return;
      if (type === "keydown") heldKeys.add(k); else heldKeys.delete(k);
      const msg = { type: "key", keysym: k, down: type === "keydown" };
      // A paste shortcut goes on to the browser (which then fires the
      // paste event with its clipboard); its keys, and those after it,
      // wait until the session holds that text (150 ms at most when no
      // paste event comes).
      if (type === "keydown" && isPasteKey(e) && !clip.pasteKeys && state.cdc && state.cdc.readyState === "open") {
        clip.pasteKeys = [msg];
        clip.pasteTimer = setTimeout(flushPaste, 150);
        return;
      }
      e.preventDefault();
      if (clip.pasteKeys) { clip.pasteKeys.push(msg); return; }
      send(msg);
    });
  }
  function releaseAll() {
    flushPaste(); // queued paste keys go first, so their releases follow
    for (let i = 0; i < 4; i++) {
      // A pad's buttons and stick, let go (polling stops in a hidden tab).
      if (pads.last[i] && state.owner) { pads.last[i] = ""; send({ type: "pad", index: i, buttons: [], axes: [] }); }
    }
    for (const k of heldKeys) send({ type: "key", keysym: k, down: false });
    for (const b of heldButtons) send({ type: "button", button: b, down: false });
    heldKeys.clear(); heldButtons.clear();
  }
  window.addEventListener("blur", releaseAll);
  document.addEventListener("visibilitychange", () => { if (document.hidden) releaseAll(); });
  window.metal.held = () => ({ keys: [...heldKeys], buttons: [...heldButtons] });

  // Map a client position to 0..1 of the picture (object-fit: contain).
  function position(e) {
    const r = video.getBoundingClientRect();
    const vw = video.videoWidth || r.width, vh = video.videoHeight || r.height;
    const scale = Math.min(r.width / vw, r.height / vh);
    const ox = r.left + (r.width - vw * scale) / 2, oy = r.top + (r.height - vh * scale) / 2;
    const clamp = (v) => Math.min(1, Math.max(0, v));
    return { x: clamp((e.clientX - ox) / (vw * scale)), y: clamp((e.clientY - oy) / (vh * scale)) };
  }
  video.addEventListener("mousemove", (e) => {
    if (state.pointerLocked) {
      if (e.movementX || e.movementY) send({ type: "rel", dx: Math.round(e.movementX), dy: Math.round(e.movementY) });
    } else {
      send(Object.assign({ type: "move" }, position(e)));
    }
  });
  for (const type of ["mousedown", "mouseup"]) {
    video.addEventListener(type, (e) => {
      const b = { 0: 1, 1: 2, 2: 3 }[e.button];
      if (!b) return;
      e.preventDefault();
      video.focus();
      if (type === "mousedown") heldButtons.add(b); else heldButtons.delete(b);
      send({ type: "button", button: b, down: type === "mousedown" });
    });
  }
  video.addEventListener("contextmenu", (e) => e.preventDefault());
  video.addEventListener("wheel", (e) => {
    e.preventDefault();
    const step = (v) => Math.max(-16, Math.min(16, Math.round(v / 100) || Math.sign(v)));
    send({ type: "wheel", dx: step(e.deltaX), dy: step(e.deltaY) });
  }, { passive: false });

  // Touch (phones, tablets): a tap clicks where it lands, one finger
  // dragging moves the pointer, two fingers scroll; Keyboard opens the
  // on-screen keyboard through a hidden text field, whose input is typed.
  const touch = { start: null, moved: false, lastY: 0, lastX: 0 };
  const TAP_MS = 300, TAP_PX = 10, SCROLL_PX = 40;
  video.addEventListener("touchstart", (e) => {
    e.preventDefault();
    const t = e.touches[0];
    touch.start = { x: t.clientX, y: t.clientY, at: performance.now(), fingers: e.touches.length };
    touch.moved = false;
    touch.lastX = t.clientX; touch.lastY = t.clientY;
    if (e.touches.length === 1) send(Object.assign({ type: "move" }, position(t)));
  }, { passive: false });
  video.addEventListener("touchmove", (e) => {
    e.preventDefault();
    if (!touch.start) return;
    const t = e.touches[0];
    if (Math.hypot(t.clientX - touch.start.x, t.clientY - touch.start.y) > TAP_PX) touch.moved = true;
    if (e.touches.length >= 2 || touch.start.fingers >= 2) {
      touch.start.fingers = 2;
      const dy = t.clientY - touch.lastY, dx = t.clientX - touch.lastX;
      if (Math.abs(dy) >= SCROLL_PX || Math.abs(dx) >= SCROLL_PX) {
        // Content follows the fingers: dragging up scrolls down.
        send({ type: "wheel", dx: Math.abs(dx) >= SCROLL_PX ? -Math.sign(dx) : 0, dy: Math.abs(dy) >= SCROLL_PX ? -Math.sign(dy) : 0 });
        touch.lastX = t.clientX; touch.lastY = t.clientY;
      }
      return;
    }
    send(Object.assign({ type: "move" }, position(t)));
  }, { passive: false });
  video.addEventListener("touchend", (e) => {
    e.preventDefault();
    const s = touch.start;
    if (!s || e.touches.length > 0) return;
    touch.start = null;
    if (s.fingers === 1 && !touch.moved && performance.now() - s.at < TAP_MS) {
      send({ type: "button", button: 1, down: true });
      send({ type: "button", button: 1, down: false });
    }
  }, { passive: false });
  const softkeys = document.getElementById("softkeys");
  const keyboardButton = document.getElementById("keyboard");
  if (softkeys) {
    // Kept in the page (a hidden field gets no keyboard) but out of sight.
    Object.assign(softkeys.style, { position: "absolute", left: "-1000px", top: "0", opacity: "0", width: "1px", height: "1px" });
    keyboardButton.hidden = !("ontouchstart" in window || navigator.maxTouchPoints > 0);
    keyboardButton.onclick = () => softkeys.focus();
    softkeys.addEventListener("input", (e) => {
      const type = (k) => { send({ type: "key", keysym: k, down: true }); send({ type: "key", keysym: k, down: false }); };
      if (e.inputType === "deleteContentBackward") type(0xff08);
      else if (e.inputType === "insertLineBreak") type(0xff0d);
      else for (const ch of e.data || "") {
        const cp = ch.codePointAt(0);
        type(cp === 10 ? 0xff0d : cp < 0x100 ? cp : 0x01000000 + cp);
      }
      softkeys.value = "";
    });
    // Named keys (Enter, Backspace, arrows) come as key events, sent here
    // and kept from the field (so no input event types them twice); text
    // comes as input events (soft keyboards report key "Unidentified").
    for (const type of ["keydown", "keyup"]) {
      softkeys.addEventListener(type, (e) => {
        e.stopPropagation();
        const k = e.key !== " " && special[e.key];
        if (!k) return;
        e.preventDefault();
        send({ type: "key", keysym: k, down: type === "keydown" });
      });
    }
  }

  if (!cfg.manual) connect();
})();
