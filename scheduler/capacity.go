package scheduler

import (
	"context"
	"time"

	"github.com/cenkalti/backoff/v4"
	nomad "github.com/hashicorp/nomad/api"
)

// capacityLocked is how many sessions may be placed: the configured number,
// or, with CapacityFromGPUs, the healthy NVENC GPUs Nomad knows in the
// datacenter. Call with s.mu held.
func (s *Scheduler) capacityLocked() int {
	if s.cfg.CapacityFromGPUs {
		return s.gpus
	}
	return s.cfg.Capacity
}

// watchCapacity follows the node list with blocking queries and recounts
// encoder GPUs whenever a node changes (joins, leaves, drains, or a device
// turns unhealthy).
func (s *Scheduler) watchCapacity(ctx context.Context) error {
	if !s.cfg.CapacityFromGPUs {
		return nil
	}
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
		n := 0
		for _, stub := range nodes {
			if stub.Status != nomad.NodeStatusReady || stub.SchedulingEligibility != nomad.NodeSchedulingEligible ||
				stub.Datacenter != s.cfg.Datacenter {
				continue
			}
			node, _, err := s.nomad.Nodes().Info(stub.ID, (&nomad.QueryOptions{AllowStale: true}).WithContext(ctx))
			if err != nil || node.NodeResources == nil {
				continue
			}
			n += EncoderGPUs(node.NodeResources.Devices)
		}
		s.mu.Lock()
		changed := s.gpus != n
		s.gpus = n
		if changed {
			s.notifyLocked()
		}
		s.mu.Unlock()
		if changed {
			s.log.Info("encoder GPU capacity", "gpus", n, "datacenter", s.cfg.Datacenter)
			s.poke()
		}
	}
	return nil
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
