package turn

import (
	"net"
	"sync"
	"time"
)

// Credentials that outlive their TTL. The gateway hands a player TURN REST
// credentials valid for a short TTL (10 minutes by default), and pion
// checks them on every Refresh, CreatePermission and ChannelBind: a relayed
// session would die when they expire, 10 to 15 minutes into a game. Metal
// keeps the TTL short for what it guards, starting a relay, and lets a
// relay that a credential opened while valid go on: the same username from
// the same client address (transport 5-tuple side) stays accepted for up to
// MaxLifetime after its first success. A leaked, expired credential opens
// nothing from anywhere else, and every relay still ends at MaxLifetime.
// The alternative, the page fetching fresh credentials and restarting ICE,
// needs an ICE restart through WHEP and a renegotiation mid-game for no
// gain in what an attacker can do.
type held struct {
	mu       sync.Mutex
	first    map[string]time.Time // username|client address -> first success
	lifetime time.Duration
	lastGC   time.Time
}

// heldCap bounds the table; beyond it, expired credentials are simply not
// extended (each entry needs a credential valid at the time, so only
// legitimate players fill it).
const heldCap = 200000

func heldKey(username, src string) string { return username + "|" + src }

// note records that a valid credential opened a relay for the client at
// src: pion answered its Allocate with success, so its MESSAGE-INTEGRITY
// was checked (pion asks the auth handler for the key before it checks
// the signature, so the handler alone proves nothing).
func (h *held) note(username, src string, now time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.first == nil {
		h.first = map[string]time.Time{}
	}
	if now.Sub(h.lastGC) > time.Minute {
		h.lastGC = now
		for k, t := range h.first {
			if now.Sub(t) > h.lifetime {
				delete(h.first, k)
			}
		}
	}
	k := heldKey(username, src)
	if _, ok := h.first[k]; !ok && len(h.first) < heldCap {
		h.first[k] = now
	}
}

// still reports whether an expired credential is still good for the relay
// it opened from src.
func (h *held) still(username string, src net.Addr, now time.Time) bool {
	if h == nil || h.lifetime <= 0 {
		return false
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	t, ok := h.first[heldKey(username, src.String())]
	return ok && now.Sub(t) < h.lifetime
}
