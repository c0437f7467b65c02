package scheduler

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"

	nomad "github.com/hashicorp/nomad/api"
	"golang.org/x/sync/errgroup"
)

// probeLoop reads each healthy streamer's /healthz (and the last address
// of one whose Consul check just went critical) every interval for what
// Consul does not carry promptly: whether a browser is connected (peers) and
// the encoder in use. Consul syncs check output only every
// check_update_interval (5 minutes by default), so its copy is stale.
func (s *Scheduler) probeLoop(ctx context.Context, interval time.Duration) error {
	client := &http.Client{Timeout: 700 * time.Millisecond}
	return every(ctx, interval, func() {
		s.mu.Lock()
		targets := map[string]Endpoint{}
		for _, m := range []map[string]Endpoint{s.lastEP, s.endpoints} {
			for id, ep := range m {
				if r, ok := s.records[id]; ok && !r.Ended {
					targets[id] = ep
				}
			}
		}
		s.mu.Unlock()
		// Every streamer at once (at most 16 in flight): one unreachable
		// edge's timeouts must not delay noticing another's.
		var g errgroup.Group
		g.SetLimit(16)
		for id, ep := range targets {
			g.Go(func() error {
				s.probeOne(ctx, client, id, ep)
				return nil
			})
		}
		_ = g.Wait()
	})
}

// probeOne reads one streamer's /healthz and fails its session over after
// three misses in a row.
func (s *Scheduler) probeOne(ctx context.Context, client *http.Client, id string, ep Endpoint) {
	h, err := probe(ctx, client, ep)
	if err != nil {
		// Three misses in a row: the edge (node, network or streamer) is
		// gone, long before Nomad's heartbeat says so.
		s.mu.Lock()
		s.probeFail[id]++
		// Three misses in a row, with Nomad still saying the streamer runs
		// (when it says otherwise, its allocation event ends the session
		// with the true reason).
		a := s.allocs[id]
		lost := s.probeFail[id] >= 3 && a != nil && a.clientStatus == nomad.AllocClientStatusRunning
		s.mu.Unlock()
		if lost && ctx.Err() == nil && s.Leading() {
			s.log.Warn("streamer unreachable", "session", id, "addr", ep.Address, "err", err)
			s.failover(ctx, id, ReasonEdgeLost)
		}
		return
	}
	s.mu.Lock()
	delete(s.probeFail, id)
	if cur, ok := s.endpoints[id]; ok && (cur.Peers != h.Peers || cur.Encoder != h.Encoder) {
		cur.Peers, cur.Encoder = h.Peers, h.Encoder
		s.endpoints[id] = cur
		s.notifyLocked()
	}
	s.mu.Unlock()
}

type streamerHealth struct {
	Encoder string `json:"encoder"`
	Peers   int    `json:"peers"`
}

func probe(ctx context.Context, c *http.Client, ep Endpoint) (streamerHealth, error) {
	var h streamerHealth
	url := "http://" + net.JoinHostPort(ep.Address, strconv.Itoa(ep.Port)) + "/healthz"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return h, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return h, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return h, fmt.Errorf("healthz %d", resp.StatusCode)
	}
	err = json.NewDecoder(io.LimitReader(resp.Body, 4096)).Decode(&h)
	return h, err
}
