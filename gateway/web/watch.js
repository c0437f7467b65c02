// Metal spectator page: a view-only share link. It polls the share until
// the stream is ready, then plays it; the gateway forwards its offer with a
// viewer token, so it sees and hears and cannot send input.
"use strict";

(function () {
  const m = window.metal;
  const share = decodeURIComponent(location.pathname.slice(3));
  let playing = false;
  window.metalWatch = { share };

  async function poll() {
    let resp, s;
    try {
      resp = await fetch(`/v1/shares/${share}`, { cache: "no-store" });
      s = await resp.json().catch(() => ({}));
    } catch (err) {
      m.setStatus("Cannot reach the gateway: " + err.message);
      setTimeout(poll, 3000);
      return;
    }
    if (resp.status === 404) {
      m.stop();
      playing = false;
      m.setStatus((s && s.error) || "This share link has expired or was revoked.");
      return;
    }
    if (resp.status !== 200) {
      m.setStatus(s.error || `The gateway refused (${resp.status})`);
      setTimeout(poll, 3000);
      return;
    }
    window.metal.session = s;
    if (s.stream) m.cfg.iceServers = s.stream.ice_servers || []; // fresh TURN credentials for a reconnect
    if (s.stream && !playing) {
      playing = true;
      m.cfg.whep = new URL(s.stream.whep, location.href).href;
      m.cfg.iceServers = s.stream.ice_servers || [];
      m.state.stopped = false;
      m.connect();
    } else if (!playing) {
      m.setStatus(s.state === "queued" ? "The player is waiting for a GPU…" : "The stream is starting…");
    }
    setTimeout(poll, playing ? 5000 : 1000); // notices revocation and the end
  }
  poll();
})();
