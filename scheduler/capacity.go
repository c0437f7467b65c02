package scheduler

import (
	"context"
	"time"

	"github.com/cenkalti/backoff/v4"
	nomad "github.com/hashicorp/nomad/api"
)

// capacityLocked is how many sessions edge dc may hold: with
// CapacityFromGPUs the healthy NVENC GPUs Nomad knows there, otherwise the
// configured Capacity while the edge has a ready node. Call with s.mu held.
func (s *Scheduler) capacityLocked(dc string) int {
	if s.cfg.CapacityFromGPUs {
		return s.gpus[dc]
	}
	if !s.nodesSeen || s.readyNodes[dc] > 0 {
		return s.cfg.Capacity
	}
	return 0
}

// totalCapacityLocked sums the capacity of every configured edge.
func (s *Scheduler) totalCapacityLocked() int {
	n := 0
	for _, dc := range s.edges() {
		n += s.capacityLocked(dc)
	}
	return n
}

// activeLocked counts placed, live sessions by edge.
func (s *Scheduler) activeLocked() map[string]int {
	active := map[string]int{}
	for _, r := range s.records {
		if r.Placed && !r.Ended {
			active[r.Datacenter]++
		}
	}
	return active
}

// watchCapacity follows the node list with blocking queries and recounts,
// per edge, ready nodes and encoder GPUs whenever a node changes (joins,
// leaves, drains, or a device turns unhealthy).
func (s *Scheduler) watchCapacity(ctx context.Context) error {
	b := backoff.NewExponentialBackOff()
	b.MaxInterval, b.MaxElapsedTime = 5*time.Second, 0
	var index uint64
	for ctx.Err() == nil {
		q := (&nomad.QueryOptions{WaitIndex: index, WaitTime: 30 * time.Second, AllowStale: true}).WithContext(ctx)
		nodes, meta, err := s.nomad.Nodes().List(q)
		if err != nil {
			if ctx.Err() == nil {
				s.log.Warn("list nodes", "err", err)
				sleep(ctx, b.NextBackOff())
			}
			continue
		}
		b.Reset()
		index = meta.LastIndex
		gpus, ready := map[string]int{}, map[string]int{}
		for _, stub := range nodes {
			if stub.Status != nomad.NodeStatusReady || stub.SchedulingEligibility != nomad.NodeSchedulingEligible {
				continue
			}
			ready[stub.Datacenter]++
			if !s.cfg.CapacityFromGPUs {
				continue
			}
			node, _, err := s.nomad.Nodes().Info(stub.ID, (&nomad.QueryOptions{AllowStale: true}).WithContext(ctx))
			if err != nil || node.NodeResources == nil {
				continue
			}
			gpus[stub.Datacenter] += EncoderGPUs(node.NodeResources.Devices)
		}
		s.mu.Lock()
		changed := !s.nodesSeen || !equalCounts(s.gpus, gpus) || !equalCounts(s.readyNodes, ready)
		s.gpus, s.readyNodes, s.nodesSeen = gpus, ready, true
		if changed {
			s.notifyLocked()
		}
		s.mu.Unlock()
		if changed {
			s.log.Info("edge capacity", "ready_nodes", ready, "encoder_gpus", gpus)
			s.poke()
		}
	}
	return nil
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

// EncoderGPUs counts the healthy NVIDIA GPU instances whose device group
// has an H.264 encoder (attribute nvenc_h264 = true).
func EncoderGPUs(devices []*nomad.NodeDeviceResource) int {
	n := 0
	for _, d := range devices {
		if d.Vendor != "nvidia" || d.Type != "gpu" {
			continue
		}
		a := d.Attributes["nvenc_h264"]
		if a == nil || a.BoolVal == nil || !*a.BoolVal {
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
