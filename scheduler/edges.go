package scheduler

import (
	"context"
	"fmt"
	"net"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v4"
	consul "github.com/hashicorp/consul/api"
)

// TURNService is the Consul service of the edges' TURN relays.
const TURNService = "metal-turn"

// Edge is a datacenter players can be placed in, as the gateway lists it.
type Edge struct {
	Name  string `json:"name"`
	Probe string `json:"probe,omitempty"` // URL a browser times to measure its RTT
	// STUN is the edge's TURN server as a STUN URL: a page served over
	// HTTPS, which may not fetch an http:// probe, times a STUN binding.
	STUN     string `json:"stun,omitempty"`
	Capacity int    `json:"capacity"`
	Free     int    `json:"free"`
	TURN     bool   `json:"turn"`
}

// Prefs are a player's placement preferences: measured RTTs by edge and
// edges to avoid (one that just failed them).
type Prefs struct {
	RTT   map[string]float64
	Avoid []string
}

// edges are the configured edges, the default (first) one first.
func (s *Scheduler) edges() []string {
	if len(s.cfg.Datacenters) > 0 {
		return s.cfg.Datacenters
	}
	return []string{s.cfg.Datacenter}
}

// Edges lists the edges with capacity, with the probe each one's TURN relay
// offers. It reads only what the watchers keep (from stale Consul reads), so
// a Consul leader election does not stop admissions.
func (s *Scheduler) Edges() []Edge {
	s.mu.Lock()
	defer s.mu.Unlock()
	active, inflight := s.activeLocked(), s.inflightLocked()
	var out []Edge
	for _, dc := range s.edges() {
		c := s.capacityLocked(dc, active, inflight)
		if c == 0 {
			continue
		}
		t := s.turn[dc]
		out = append(out, Edge{Name: dc, Probe: t.probe, STUN: t.stun, Capacity: c, Free: max(0, c-active[dc]), TURN: t.passing})
	}
	return out
}

// order ranks the edges for a player: measured ones by RTT, then the rest
// in Consul's order from the gateway's agent (nearest TURN first), then in
// configured order (the default edge first). It also says why the first
// was chosen. Call with s.mu held.
func (s *Scheduler) orderLocked(p Prefs) ([]string, string) {
	if len(p.Avoid) > 0 {
		all := true
		for _, dc := range s.edges() {
			all = all && slices.Contains(p.Avoid, dc)
		}
		if all {
			p.Avoid = nil // avoiding every edge would leave the player nowhere
		}
	}
	var measured, rest []string
	for _, dc := range s.edges() {
		if slices.Contains(p.Avoid, dc) {
			continue
		}
		if _, ok := p.RTT[dc]; ok {
			measured = append(measured, dc)
		} else {
			rest = append(rest, dc)
		}
	}
	sort.SliceStable(measured, func(i, j int) bool { return p.RTT[measured[i]] < p.RTT[measured[j]] })
	rank := map[string]int{}
	for i, dc := range s.consulOrder {
		rank[dc] = i + 1
	}
	sort.SliceStable(rest, func(i, j int) bool {
		ri, rj := rank[rest[i]], rank[rest[j]]
		if ri == 0 {
			ri = 1 << 30
		}
		if rj == 0 {
			rj = 1 << 30
		}
		return ri < rj
	})
	why := "default edge (no measurements)"
	switch {
	case len(measured) > 0:
		why = fmt.Sprintf("lowest measured RTT (%s %.0f ms)", measured[0], p.RTT[measured[0]])
	case len(s.consulOrder) > 0:
		why = "no measurements: nearest TURN in Consul's order from the gateway's agent"
	}
	return append(measured, rest...), why
}

type turnState struct {
	passing bool
	probe   string
	stun    string
}

// watchTURN follows the TURN relays in Consul (blocking queries, stale
// reads, sorted near the gateway's agent): which edges have a passing relay,
// their probe URLs, and Consul's order of edges for the fallback.
func (s *Scheduler) watchTURN(ctx context.Context) error {
	b := backoff.NewExponentialBackOff()
	b.MaxInterval, b.MaxElapsedTime = 5*time.Second, 0
	var index uint64
	for ctx.Err() == nil {
		q := (&consul.QueryOptions{WaitIndex: index, WaitTime: 30 * time.Second, AllowStale: true, Near: "_agent"}).WithContext(ctx)
		entries, meta, err := s.consul.Health().Service(TURNService, "", true, q)
		if err != nil {
			if ctx.Err() == nil {
				s.log.Warn("consul turn health", "err", err)
				sleep(ctx, b.NextBackOff())
			}
			continue
		}
		b.Reset()
		index = meta.LastIndex
		turn := map[string]turnState{}
		var order []string
		for _, e := range entries {
			dc := ""
			for _, tag := range e.Service.Tags {
				if v, ok := strings.CutPrefix(tag, "dc-"); ok {
					dc = v
				}
			}
			if dc == "" {
				continue
			}
			if _, seen := turn[dc]; !seen {
				order = append(order, dc)
			}
			st := turnState{passing: true}
			// The relay's public address, as TURN credentials name it.
			addr := e.Service.Meta["relay_ip"]
			if addr == "" {
				addr = e.Service.Address
			}
			if addr == "" {
				addr = e.Node.Address
			}
			if addr != "" && e.Service.Port > 0 {
				st.stun = "stun:" + net.JoinHostPort(addr, strconv.Itoa(e.Service.Port))
			}
			if p := e.Service.Meta["probe"]; strings.HasPrefix(p, "http://") || strings.HasPrefix(p, "https://") {
				st.probe = p
			}
			turn[dc] = st
		}
		s.mu.Lock()
		s.turn, s.consulOrder = turn, order
		s.notifyLocked()
		s.mu.Unlock()
	}
	return nil
}
