package scheduler

import (
	"context"
	"fmt"
	"time"

	"github.com/cenkalti/backoff/v4"
	nomad "github.com/hashicorp/nomad/api"
)

// capacityLocked is how many sessions edge dc holds now or could take: the
// live placed ones plus the room Nomad has for more (room.go). Call with
// s.mu held.
func (s *Scheduler) capacityLocked(dc string, active, inflight map[string]int) int {
	return active[dc] + s.freeLocked(dc, active, inflight)
}

// totalCapacityLocked sums the capacity of every configured edge.
func (s *Scheduler) totalCapacityLocked() int {
	active, inflight := s.activeLocked(), s.inflightLocked()
	n := 0
	for _, dc := range s.edges() {
		n += s.capacityLocked(dc, active, inflight)
	}
	return n
}

// activeLocked counts placed sessions by edge: live ones, and ended ones
// whose allocation Nomad still runs (a purge in flight, or one that failed
// and the sweep will retry), so the optional Capacity bound counts what
// Nomad holds, not what the records say.
func (s *Scheduler) activeLocked() map[string]int {
	active := map[string]int{}
	for id, r := range s.records {
		if s.holdsSlotLocked(id, r) {
			active[r.Datacenter]++
		}
	}
	return active
}

// holdsSlotLocked reports whether session id counts against its edge's
// capacity: placed and live, or ended while Nomad may still run its job.
// Call with s.mu held.
func (s *Scheduler) holdsSlotLocked(id string, r *record) bool {
	return r.Placed && (!r.Ended || s.holdsJobLocked(id, r))
}

// endedHold is how long an ended session with no allocation seen, whose
// purge this gateway has not seen succeed, still counts against capacity:
// its registration may be in flight at another gateway (the one that was
// leading), which purges it again when the registration answers.
const endedHold = 30 * time.Second

// holdsJobLocked reports whether an ended session may still hold its job
// in Nomad: its allocation runs (whoever purged it: a purge that raced the
// registration in flight leaves a job Nomad runs), or it never had one and
// nobody here has seen its purge succeed yet, for endedHold at most. Call
// with s.mu held.
func (s *Scheduler) holdsJobLocked(id string, r *record) bool {
	a := s.allocs[id]
	if allocLive(a) && (!r.purged || a.createIndex > r.purgedIndex) {
		// Live, and not of the registration this gateway purged: that
		// one's stop is never recorded (observeAlloc ignores its
		// updates), while Nomad stops it.
		return true
	}
	return !r.purged && a == nil && time.Since(r.EndedAt) < endedHold
}

// holdEndsLocked is how long until the first ended session held by time
// alone (holdsJobLocked) stops counting, or 0 when none is: the placement
// loop looks again then, since nothing else would wake it. Call with s.mu
// held.
func (s *Scheduler) holdEndsLocked() time.Duration {
	var next time.Duration
	for id, r := range s.records {
		if !r.Placed || !r.Ended || r.purged || s.allocs[id] != nil {
			continue
		}
		if d := endedHold - time.Since(r.EndedAt); d > 0 && (next == 0 || d < next) {
			next = d
		}
	}
	return next
}

// allocLive reports whether an allocation still holds its resources.
func allocLive(a *allocInfo) bool {
	return a != nil && a.desiredStatus == nomad.AllocDesiredStatusRun &&
		(a.clientStatus == nomad.AllocClientStatusPending || a.clientStatus == nomad.AllocClientStatusRunning)
}

// watchCapacity learns what a session reserves, then follows the node list
// with blocking queries. Whenever a node changes (joins, leaves, drains, a
// device turns unhealthy) it reads that node's resources and encoder slots
// again and recounts every edge's room.
func (s *Scheduler) watchCapacity(ctx context.Context) error {
	b := backoff.NewExponentialBackOff()
	b.MaxInterval, b.MaxElapsedTime = 5*time.Second, 0
	for ctx.Err() == nil {
		err := s.loadDemand(ctx)
		if err == nil {
			break
		}
		s.log.Warn("read the streamer job's reservation", "err", err)
		sleep(ctx, b.NextBackOff())
	}
	b.Reset()
	var index uint64
	seen := map[string]uint64{} // node id: modify index read
	nodes := map[string]nodeRoom{}
	for ctx.Err() == nil {
		q := (&nomad.QueryOptions{WaitIndex: index, WaitTime: 30 * time.Second, AllowStale: true}).WithContext(ctx)
		stubs, meta, err := s.nomad.Nodes().List(q)
		if err != nil {
			if ctx.Err() == nil {
				_ = s.nomadErr(fmt.Errorf("list nodes: %w", err))
				sleep(ctx, b.NextBackOff())
			}
			continue
		}
		b.Reset()
		s.nomadDown.Store(false)
		index = meta.LastIndex
		ready, next, nextSeen := map[string]int{}, map[string]nodeRoom{}, map[string]uint64{}
		for _, stub := range stubs {
			if stub.Status != nomad.NodeStatusReady || stub.SchedulingEligibility != nomad.NodeSchedulingEligible {
				continue
			}
			ready[stub.Datacenter]++
			if nr, ok := nodes[stub.ID]; ok && seen[stub.ID] == stub.ModifyIndex {
				next[stub.ID], nextSeen[stub.ID] = nr, stub.ModifyIndex
				continue
			}
			node, _, err := s.nomad.Nodes().Info(stub.ID, (&nomad.QueryOptions{AllowStale: true}).WithContext(ctx))
			if err != nil {
				s.metrics.errors.WithLabelValues("nomad").Inc()
				s.log.Warn("read node", "node", stub.Name, "err", err)
				index = 0 // read it again on the next round
				continue
			}
			next[stub.ID], nextSeen[stub.ID] = roomOfNode(node), stub.ModifyIndex
		}
		nodes, seen = next, nextSeen
		s.mu.Lock()
		readyChanged := !s.nodesSeen || !equalCounts(s.readyNodes, ready)
		s.nodes, s.readyNodes, s.nodesSeen = next, ready, true
		s.recountLocked()
		room := copyCounts(s.room)
		if readyChanged {
			s.notifyLocked()
		}
		s.mu.Unlock()
		s.log.Debug("edge room", "ready_nodes", ready, "room", room)
		s.poke()
		if index == 0 {
			sleep(ctx, b.NextBackOff())
		}
	}
	return nil
}

func copyCounts(m map[string]int) map[string]int {
	out := make(map[string]int, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func equalCounts(a, b map[string]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// EncoderGPUs counts the healthy encoder slots (device instances of NVIDIA
// GPU groups with nvenc_h264 = true) a node offers.
func EncoderGPUs(devices []*nomad.NodeDeviceResource) int {
	n := 0
	for _, d := range devices {
		if !isEncoderGroup(d) {
			continue
		}
		for _, inst := range d.Instances {
			if inst.Healthy {
				n++
			}
		}
	}
	return n
}
