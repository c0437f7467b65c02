package scheduler

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v4"
	consul "github.com/hashicorp/consul/api"
	nomad "github.com/hashicorp/nomad/api"
)

// StreamerService is the Consul service streamers register.
const StreamerService = "metal-streamer"

// watchNomad follows Nomad's event stream for allocations and evaluations of
// session jobs. It first lists the current allocations, then streams from
// that index, and reconnects with backoff.
func (s *Scheduler) watchNomad(ctx context.Context) error {
	b := backoff.NewExponentialBackOff()
	b.MaxInterval = 5 * time.Second
	b.MaxElapsedTime = 0
	var index uint64
	for ctx.Err() == nil {
		if index == 0 {
			idx, err := s.seedAllocs(ctx)
			if err != nil {
				_ = s.nomadErr(fmt.Errorf("list allocations: %w", err))
				sleep(ctx, b.NextBackOff())
				continue
			}
			index = idx
		}
		err := s.stream(ctx, &index, b)
		if ctx.Err() != nil {
			return nil
		}
		// Events may have left Nomad's buffer while disconnected: list the
		// allocations again rather than trust a view with holes in it.
		index = 0
		_ = s.nomadErr(fmt.Errorf("nomad event stream ended; reconnecting: %w", err))
		sleep(ctx, b.NextBackOff())
	}
	return nil
}

// seedAllocs lists every allocation with its resources: session ones are
// followed as sessions, and every live one counts against its node's room.
func (s *Scheduler) seedAllocs(ctx context.Context) (uint64, error) {
	// Every namespace the token may read ("*"): the gateway's and TURN's
	// allocations take room on the nodes too.
	q := &nomad.QueryOptions{AllowStale: true, Namespace: "*", Params: map[string]string{"resources": "true"}}
	allocs, meta, err := s.nomad.Allocations().List(q.WithContext(ctx))
	if err != nil {
		return 0, err
	}
	s.mu.Lock()
	s.usage = map[string]allocUse{}
	for _, a := range allocs {
		if u, live := useOf(a.NodeID, a.DesiredStatus, a.ClientStatus, a.AllocatedResources); live {
			s.usage[a.ID] = u
		}
	}
	s.allocsSeen = true
	s.recountLocked()
	s.mu.Unlock()
	s.nomadDown.Store(false)
	for _, a := range allocs {
		if id, ok := strings.CutPrefix(a.JobID, s.cfg.JobPrefix); ok {
			s.observeAlloc(ctx, id, &allocInfo{
				id: a.ID, clientStatus: a.ClientStatus, desiredStatus: a.DesiredStatus,
				node: a.NodeName, nodeID: a.NodeID, failure: taskFailure(a.TaskStates), modifyIndex: a.ModifyIndex,
				createIndex: a.CreateIndex,
			})
		}
	}
	return meta.LastIndex, nil
}

func (s *Scheduler) stream(ctx context.Context, index *uint64, b backoff.BackOff) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	topics := map[nomad.Topic][]string{nomad.TopicAllocation: {"*"}, nomad.TopicEvaluation: {"*"}, nomad.TopicNode: {"*"}}
	ch, err := s.nomad.EventStream().Stream(ctx, topics, *index+1, (&nomad.QueryOptions{AllowStale: true}).WithContext(ctx))
	if err != nil {
		return err
	}
	for evs := range ch {
		if evs.Err != nil {
			return evs.Err
		}
		b.Reset()
		s.nomadDown.Store(false)
		if evs.IsHeartbeat() {
			continue
		}
		for _, e := range evs.Events {
			switch e.Topic {
			case nomad.TopicAllocation:
				a, err := e.Allocation()
				if err != nil || a == nil {
					continue
				}
				u, live := useOf(a.NodeID, a.DesiredStatus, a.ClientStatus, a.AllocatedResources)
				s.mu.Lock()
				s.observeUseLocked(a.ID, u, live)
				s.mu.Unlock()
				if id, ok := strings.CutPrefix(a.JobID, s.cfg.JobPrefix); ok {
					s.observeAlloc(ctx, id, &allocInfo{
						id: a.ID, clientStatus: a.ClientStatus, desiredStatus: a.DesiredStatus,
						node: a.NodeName, nodeID: a.NodeID, failure: taskFailure(a.TaskStates), modifyIndex: a.ModifyIndex,
						createIndex: a.CreateIndex,
					})
				}
			case nomad.TopicNode:
				n, err := e.Node()
				if err == nil {
					s.observeNode(ctx, n)
				}
			case nomad.TopicEvaluation:
				ev, err := e.Evaluation()
				if err != nil || ev == nil {
					continue
				}
				if id, ok := strings.CutPrefix(ev.JobID, s.cfg.JobPrefix); ok {
					if ev.Status == nomad.EvalStatusBlocked || len(ev.FailedTGAllocs) > 0 {
						// Nomad cannot place it now: back to the queue, job
						// purged, instead of a blocked job the player waits
						// on blind.
						s.requeue(ctx, id, ev.JobModifyIndex, refusal(ev))
					}
				}
			}
		}
		*index = evs.Index
	}
	return ctx.Err()
}

// observeAlloc records an allocation update; the leader ends the session
// when the allocation is terminal (act).
func (s *Scheduler) observeAlloc(ctx context.Context, id string, a *allocInfo) {
	s.mu.Lock()
	r, ok := s.records[id]
	if !ok {
		s.mu.Unlock()
		return
	}
	if old := s.allocs[id]; old != nil && old.id == a.id && old.modifyIndex > a.modifyIndex {
		s.mu.Unlock()
		return // stale
	}
	if r.purging || (a.createIndex != 0 && a.createIndex <= r.purgedIndex) {
		// An allocation of a registration this gateway purged: Nomad
		// refused the session, which went back to the queue, but a blocked
		// evaluation placed it before the purge landed. Its stop is
		// Metal's own doing, not the session's end (the session may be
		// queued, or placed again by now).
		s.mu.Unlock()
		return
	}
	if s.allocs[id] == nil && !r.placeStart.IsZero() {
		s.metrics.placement.Observe(time.Since(r.placeStart).Seconds())
		r.placeStart = time.Time{}
	}
	s.allocs[id] = a
	r.refusals = 0 // Nomad placed it: it holds no edge for the queue any more
	s.notifyLocked()
	s.mu.Unlock()
	if s.Leading() {
		s.act(ctx, id, a)
	}
}

// act ends a live session whose allocation is terminal: lost with its
// node (failed over), failed (the streamer crashed: failed over too with
// Failover "auto", the node being fine), or complete.
func (s *Scheduler) act(ctx context.Context, id string, a *allocInfo) {
	s.mu.Lock()
	r, ok := s.records[id]
	ended := !ok || r.Ended
	s.mu.Unlock()
	if ended {
		return
	}
	switch a.clientStatus {
	case nomad.AllocClientStatusLost:
		s.failover(ctx, id, ReasonNodeLost)
	case nomad.AllocClientStatusFailed:
		reason := ReasonStreamerCrashed
		if a.failure != "" {
			reason += " (" + a.failure + ")"
		}
		s.failover(ctx, id, reason)
	case nomad.AllocClientStatusComplete:
		reason := ReasonStreamerExited
		if a.desiredStatus == nomad.AllocDesiredStatusStop {
			reason = ReasonStopped
		}
		if err := s.finish(ctx, id, false, reason, ""); err != nil {
			s.log.Error("end session", "session", id, "err", err)
		}
	}
}

// observeNode fails over, at once, every session on a node Nomad reports
// down: the player hears it when Nomad does (heartbeat TTL plus grace),
// not when the allocation's loss reaches the event stream.
func (s *Scheduler) observeNode(ctx context.Context, n *nomad.Node) {
	if n == nil || n.Status != nomad.NodeStatusDown || !s.Leading() {
		return
	}
	s.mu.Lock()
	var on []string
	for id, a := range s.allocs {
		if r, ok := s.records[id]; ok && !r.Ended && a.nodeID == n.ID {
			on = append(on, id)
		}
	}
	s.mu.Unlock()
	for _, id := range on {
		s.log.Warn("node down", "node", n.Name, "session", id)
		s.failover(ctx, id, ReasonNodeLost)
	}
}

// refusal says in a few words why Nomad could not place an evaluation's
// allocations (its metrics name the exhausted dimension).
func refusal(ev *nomad.Evaluation) string {
	for _, m := range ev.FailedTGAllocs {
		if m == nil {
			continue
		}
		for dim := range m.DimensionExhausted {
			return dim + " exhausted"
		}
		for c := range m.ConstraintFiltered {
			return "filtered by " + c
		}
		if m.NodesAvailable != nil && len(m.NodesAvailable) == 0 {
			return "no node available"
		}
	}
	return "evaluation " + ev.Status
}

// taskFailure summarises why a task died, from its last terminal event.
func taskFailure(states map[string]*nomad.TaskState) string {
	for _, ts := range states {
		if ts == nil || !ts.Failed {
			continue
		}
		for i := len(ts.Events) - 1; i >= 0; i-- {
			ev := ts.Events[i]
			if ev.Type == nomad.TaskTerminated {
				if ev.Signal != 0 {
					return fmt.Sprintf("killed by signal %d", ev.Signal)
				}
				return fmt.Sprintf("exit code %d", ev.ExitCode)
			}
			if ev.DisplayMessage != "" && (ev.Type == nomad.TaskDriverFailure || ev.Type == nomad.TaskSetupFailure) {
				return ev.DisplayMessage
			}
		}
	}
	return ""
}

// watchConsul follows the health of every streamer with blocking queries
// (stale reads allowed, so a leader election does not stall admissions).
func (s *Scheduler) watchConsul(ctx context.Context) error {
	b := backoff.NewExponentialBackOff()
	b.MaxInterval = 5 * time.Second
	b.MaxElapsedTime = 0
	var index uint64
	for ctx.Err() == nil {
		q := (&consul.QueryOptions{WaitIndex: index, WaitTime: 30 * time.Second, AllowStale: true}).WithContext(ctx)
		entries, meta, err := s.consul.Health().Service(StreamerService, "", false, q)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			s.consulError("consul health", err)
			sleep(ctx, b.NextBackOff())
			continue
		}
		b.Reset()
		if meta.LastIndex < index {
			index = 0 // Consul's index went backwards (restore); start over
		} else {
			index = meta.LastIndex
		}
		eps := map[string]Endpoint{}
		critical := map[string]bool{}
		for _, e := range entries {
			id := e.Service.Meta["session"]
			if id != "" && e.Checks.AggregatedStatus() == consul.HealthCritical {
				critical[id] = true
			}
			if id == "" || e.Checks.AggregatedStatus() != consul.HealthPassing {
				continue
			}
			ep := Endpoint{Address: e.Service.Address, Port: e.Service.Port, Node: e.Node.Node, Encoder: e.Service.Meta["encoder"]}
			if ep.Address == "" {
				ep.Address = e.Node.Address
			}
			for _, c := range e.Checks {
				if h, ok := parseHealth(c.Output); ok {
					ep.Encoder, ep.Peers = h.Encoder, h.Peers
				}
			}
			eps[id] = ep
		}
		s.mu.Lock()
		for id, ep := range eps {
			if old, ok := s.endpoints[id]; ok && old.Address == ep.Address && old.Port == ep.Port {
				ep.Peers, ep.Encoder = old.Peers, old.Encoder
				eps[id] = ep
			}
			delete(s.lastEP, id)
		}
		// A live session's check that left passing: its stream is not
		// offered any more, and the probe watches its last address.
		for id, old := range s.endpoints {
			if r, ok := s.records[id]; ok && !r.Ended && r.Placed {
				if _, still := eps[id]; !still {
					s.lastEP[id] = old
				}
			}
		}
		s.watchCriticalLocked(ctx, critical)
		s.endpoints = eps
		s.notifyLocked()
		s.mu.Unlock()
	}
	return nil
}

// criticalGrace is how long a live session's Consul check may stay
// critical before the leader fails the session over. The check runs every
// 2 s (jobs/streamer.nomad.hcl), so one slow answer on a busy node passes
// again within the grace; a streamer that stopped answering, or a node
// whose Consul agent is gone (serfHealth critical), does not: its player
// hears within 5 s of the check going critical, with the probe loop as
// the backup.
const criticalGrace = 3 * time.Second

// watchCriticalLocked follows which sessions' checks went critical after
// passing (a starting streamer's check is critical until its first pass:
// that is not a failure): each gets a timer, which fails the session over
// if its check is still critical when the grace ends. Call with s.mu held,
// before s.endpoints (the sessions passing until now) is replaced.
func (s *Scheduler) watchCriticalLocked(ctx context.Context, critical map[string]bool) {
	for id := range s.critical {
		if !critical[id] {
			delete(s.critical, id) // passing again, or deregistered (its allocation says why)
		}
	}
	for id := range critical {
		if _, ok := s.critical[id]; ok {
			continue
		}
		if _, passed := s.endpoints[id]; !passed {
			continue
		}
		r, ok := s.records[id]
		if !ok || r.Ended || !r.Placed {
			continue
		}
		since := time.Now()
		s.critical[id] = since
		time.AfterFunc(criticalGrace, func() { s.criticalTooLong(ctx, id, since) })
	}
}

// criticalTooLong fails a session over whose check has been critical since
// since, if it still is, the session still lives, Nomad still says its
// streamer runs (otherwise its allocation's event ends the session with
// the true reason), and this gateway leads.
func (s *Scheduler) criticalTooLong(ctx context.Context, id string, since time.Time) {
	s.mu.Lock()
	r, ok := s.records[id]
	a := s.allocs[id]
	critical := s.critical[id] == since && ok && !r.Ended && r.Placed
	running := a != nil && a.clientStatus == nomad.AllocClientStatusRunning
	s.mu.Unlock()
	if !critical || ctx.Err() != nil {
		return
	}
	if !running || !s.Leading() {
		// Not this gateway's to act on now (it follows), or Nomad has not
		// said yet: look again while the check stays critical, so a
		// gateway that leads later still acts.
		time.AfterFunc(time.Second, func() { s.criticalTooLong(ctx, id, since) })
		return
	}
	s.log.Warn("streamer check critical", "session", id, "for", time.Since(since).Round(time.Millisecond))
	s.failover(ctx, id, ReasonUnhealthy)
}

// parseHealth reads the streamer's /healthz JSON out of a Consul HTTP check
// output ("HTTP GET ...: 200 OK Output: {...}").
func parseHealth(out string) (streamerHealth, bool) {
	var h streamerHealth
	i := strings.IndexByte(out, '{')
	if i < 0 {
		return h, false
	}
	return h, json.Unmarshal([]byte(strings.TrimSpace(out[i:])), &h) == nil
}

// every calls f every d until ctx ends.
func every(ctx context.Context, d time.Duration, f func()) error {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		f()
	}
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}
