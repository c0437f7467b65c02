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
  window.metalGateway = { get session() { return session; } };

  async function start() {
    m.setStatus("Requesting a session…");
    let resp;
    try {
      resp = await fetch("/v1/sessions", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(link ? { link } : { guest }),
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

  function follow(id) {
    if (events) events.close();
    events = new EventSource(`/v1/sessions/${id}/events`);
    events.addEventListener("status", (e) => show(JSON.parse(e.data)));
    events.onerror = () => {
      if (session && ["ended", "failed"].includes(session.state)) events.close();
    };
  }

  function show(s) {
    session = s;
    window.metal.session = s;
    switch (s.state) {
      case "queued":
        m.setStatus(`All GPUs are busy. You are number ${s.position} in the queue.`);
        break;
      case "failed":
        m.stop();
        m.setStatus(`Stream failed: ${s.reason}. Reload to try again.`);
        events && events.close();
        break;
      case "ended":
        m.stop();
        m.setStatus(`Stream ended (${s.reason}). Reload to play again.`);
        events && events.close();
        break;
      default:
        if (s.stream && !playing) {
          playing = true;
          m.cfg.whep = s.stream.whep;
          m.cfg.token = s.stream.token;
          m.cfg.iceServers = s.stream.ice_servers || [];
          m.connect();
        } else if (!playing) {
          m.setStatus(labels[s.state] || s.state);
        } else if (s.stream) {
          m.cfg.token = s.stream.token; // fresh token for reconnects
        }
    }
  }

  start();
})();
