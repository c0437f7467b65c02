// Metal gateway page: get or create this player's session, follow its
// progress over server-sent events, then play it with player.js.
"use strict";

(function () {
  const m = window.metal;
  const link = location.pathname.startsWith("/p/") ? decodeURIComponent(location.pathname.slice(3)) : "";
  let guest = "";
  if (!link) {
    guest = localStorage.getItem("metal-guest") || "";
    if (!guest) {
      guest = Array.from(crypto.getRandomValues(new Uint8Array(12)), (b) => b.toString(16).padStart(2, "0")).join("");
      localStorage.setItem("metal-guest", guest);
    }
  }
  const labels = {
    placing: "Finding a GPU…",
    starting: "Starting your stream…",
    ready: "Connecting…",
    connected: "Connecting…",
  };
  let session = null, playing = false, events = null;
  window.metalGateway = { get session() { return session; }, stunRTT: (u, ms) => gatherOnly(ms).then((b) => stunRTT(u, ms, b)) };

  // stunRTT times a STUN binding to an edge's TURN server through WebRTC:
  // from gathering start to the server-reflexive candidate, or to the end
  // of gathering when the browser drops that candidate (a player with no
  // NAT: it equals the host candidate), less the time gathering takes with
  // no server, is one round trip.
  // It works from an HTTPS page, where fetching an edge's http:// probe is
  // mixed content and blocked.
  function stunRTT(url, ms, base = null) {
    return new Promise((resolve) => {
      let pc;
      try { pc = new RTCPeerConnection({ iceServers: [{ urls: url }] }); } catch (_) { resolve(null); return; }
      const done = (v) => { clearTimeout(timer); try { pc.close(); } catch (_) { /* closed */ } resolve(v); };
      const timer = setTimeout(() => done(null), ms);
      let t0 = 0;
      // Gathering host candidates comes first (base: the same gathering with
      // no server); what follows is the STUN round trip. A server that does
      // not answer never ends gathering within ms: no figure.
      const rtt = () => Math.max(0.1, performance.now() - t0 - (base || 0));
      pc.onicecandidate = (ev) => {
        if (ev.candidate && / typ srflx /.test(ev.candidate.candidate)) done(rtt());
        if (!ev.candidate) done(rtt());
      };
      pc.createDataChannel("rtt");
      pc.createOffer().then((o) => { t0 = performance.now(); return pc.setLocalDescription(o); }).catch(() => done(null));
    });
  }

  // gatherOnly times ICE gathering with no server: the baseline a STUN
  // measurement must clearly exceed.
  function gatherOnly(ms) {
    return new Promise((resolve) => {
      const pc = new RTCPeerConnection({ iceServers: [] });
      let t0 = 0;
      const done = (v) => { clearTimeout(timer); pc.close(); resolve(v); };
      const timer = setTimeout(() => done(null), ms);
      pc.onicecandidate = (ev) => { if (!ev.candidate) done(performance.now() - t0); };
      pc.createDataChannel("base");
      pc.createOffer().then((o) => { t0 = performance.now(); return pc.setLocalDescription(o); }).catch(() => done(null));
    });
  }

  // measure times each edge: over HTTPS through STUN to its TURN server,
  // over HTTP its probe a few times under a short deadline, keeping the best
  // of the warm samples (the first one pays for the TCP connection).
  async function measure() {
    let edges = [];
    try {
      edges = await (await fetch("/v1/edges", { cache: "no-store" })).json();
    } catch (_) { return {}; }
    const rtt = {};
    if (location.protocol === "https:") {
      const base = await gatherOnly(1500);
      await Promise.all(edges.filter((e) => e.stun).map(async (e) => {
        const samples = [];
        for (let i = 0; i < 3; i++) {
          const v = await stunRTT(e.stun, 1500, base);
          if (v === null) break;
          samples.push(v);
        }
        if (samples.length) rtt[e.name] = Math.max(0.1, Math.min(...samples));
      }));
      window.metal.rtt = rtt;
      window.metal.rttMethod = "stun";
      return rtt;
    }
    await Promise.all(edges.filter((e) => e.probe).map(async (e) => {
      const samples = [];
      const deadline = performance.now() + 1500;
      for (let i = 0; i < 4 && performance.now() < deadline; i++) {
        const t0 = performance.now();
        try {
          const ctl = new AbortController();
          const timer = setTimeout(() => ctl.abort(), Math.max(1, deadline - t0));
          await fetch(e.probe, { cache: "no-store", mode: "cors", signal: ctl.signal });
          clearTimeout(timer);
          samples.push(performance.now() - t0);
        } catch (_) { break; }
      }
      const warm = samples.length > 1 ? samples.slice(1) : samples;
      if (warm.length) rtt[e.name] = Math.max(0.1, Math.min(...warm));
    }));
    window.metal.rtt = rtt;
    return rtt;
  }

  async function start(avoid) {
    m.setStatus("Measuring the nearest edge…");
    const rtt = await measure();
    m.setStatus("Requesting a session…");
    let resp;
    try {
      const body = link ? { link } : { guest };
      if (Object.keys(rtt).length) body.rtt = rtt;
      if (avoid && avoid.length) body.avoid = avoid;
      resp = await fetch("/v1/sessions", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(body),
      });
    } catch (err) {
      m.setStatus("Cannot reach the gateway: " + err.message);
      setTimeout(start, 3000);
      return;
    }
    const body = await resp.json().catch(() => ({}));
    if (![200, 201, 202].includes(resp.status)) {
      m.setStatus(body.error || `The gateway refused (${resp.status})`);
      if (resp.status === 429 || resp.status >= 500) setTimeout(start, 5000);
      return;
    }
    show(body);
    follow(body.id);
  }

  let current = "";
  function follow(id) {
    if (events) events.close();
    current = id;
    events = new EventSource(`/v1/sessions/${id}/events`);
    events.addEventListener("status", (e) => {
      const s = JSON.parse(e.data);
      if (s.id === current) show(s);
    });
    events.onerror = () => {
      if (session && session.id === id && ["ended", "failed"].includes(session.state)) {
        events.close();
      } else if (events.readyState === EventSource.CLOSED) {
        // Refused: not yet known to this gateway, or the owner cookie expired
        // (404 for a session that is not ours). Ask again; after a 404, ask
        // for the session afresh with the link, which resumes it.
        setTimeout(() => {
          fetch(`/v1/sessions/${id}`, { cache: "no-store" })
            .then((r) => (r.status === 404 ? start() : follow(id)))
            .catch(() => follow(id));
        }, 1000);
      }
    };
  }

  function show(s) {
    session = s;
    window.metal.session = s;
    switch (s.state) {
      case "queued":
        // Never "Connecting…" while no GPU holds the stream: a player whose
        // session Nomad could not place is back here, with its position.
        m.setStatus(`Waiting for a GPU: you are number ${s.position} in the queue.`);
        break;
      case "failed":
        m.stop();
        events && events.close();
        if (s.replacement) {
          // The gateway already placed a replacement on the next-nearest edge.
          m.setStatus(`Stream failed: ${s.reason}. Moving you to another edge…`);
          window.metal.failovers = (window.metal.failovers || 0) + 1;
          playing = false;
          follow(s.replacement);
        } else if (/lost/.test(s.reason || "")) {
          m.setStatus(`Stream failed: ${s.reason}.`);
          offerRetry([s.edge], "Play on the next edge");
        } else if (s.edge) {
          m.setStatus(`Stream failed: ${s.reason}.`);
          offerRetry([], "Play again");
        } else {
          m.setStatus(`Stream failed: ${s.reason}. Reload to try again.`);
        }
        break;
      case "ended":
        m.stop();
        m.setStatus(`Stream ended (${s.reason}). Reload to play again.`);
        events && events.close();
        break;
      default:
        if (s.stream && !playing) {
          playing = true;
          m.cfg.whep = new URL(s.stream.whep, location.href).href;
          m.cfg.token = "";
          m.cfg.iceServers = s.stream.ice_servers || [];
          m.cfg.refresh = async () => {
            const r = await fetch(`/v1/sessions/${s.id}`, { cache: "no-store" });
            const fresh = r.ok ? await r.json() : null;
            if (fresh && fresh.stream) m.cfg.iceServers = fresh.stream.ice_servers || [];
          };
          m.state.stopped = false;
          m.state.retries = 0;
          m.connect();
        } else if (!playing) {
          m.setStatus(labels[s.state] || s.state);
        }
    }
  }

  // offerRetry shows a button that asks for a session on another edge.
  function offerRetry(avoid, label) {
    const b = document.createElement("button");
    b.id = "retry";
    b.textContent = label;
    b.style.cssText = "position:absolute;left:50%;top:60%;transform:translateX(-50%);padding:8px 16px;font-size:1rem";
    b.onclick = () => { b.remove(); playing = false; start(avoid); };
    document.body.appendChild(b);
  }

  start();
})();
