package scheduler

import (
	"context"
	"fmt"

	nomad "github.com/hashicorp/nomad/api"
)

// Room: how many more sessions Nomad can place on each edge, derived from
// Nomad itself rather than from a configured count. The scheduler keeps
//   - every ready, eligible node's allocatable CPU and memory (total less
//     the client's reserved) and its healthy encoder slots (device
//     instances of an nvidia/gpu group with nvenc_h264 = true), from the
//     node list's blocking queries;
//   - every live allocation's CPU, memory and device instances, whatever
//     its job, from the allocation list and then Nomad's event stream;
//   - what one session job asks for (the streamer task's resources and
//     whether it needs a GPU slot), from the rendered job file.
// A node fits as many sessions as its scarcest free resource allows; an
// edge's room is the sum over its nodes. Sessions the gateway has placed
// whose allocation Nomad has not reported yet are taken off that room, so
// a slot is never handed out twice. What this does not model (ports,
// constraints an operator added) Nomad can still refuse: that shows as a
// blocked evaluation, and the session goes back to the queue (requeue).

// demand is what one session job reserves.
type demand struct {
	cpu, memory int64 // MHz, MiB
	gpu         bool  // one nvidia/gpu instance with nvenc_h264
}

// nodeRoom is one schedulable node as the room count sees it.
type nodeRoom struct {
	dc          string
	cpu, memory int64           // allocatable
	slots       map[string]bool // healthy encoder instance ids
}

// allocUse is what one live allocation holds on its node.
type allocUse struct {
	node        string
	cpu, memory int64
	devices     []string
}

// demandOf reads what the streamer job reserves from a rendered job.
func demandOf(job *nomad.Job) (demand, error) {
	var d demand
	if len(job.TaskGroups) == 0 {
		return d, fmt.Errorf("streamer job has no task group")
	}
	for _, t := range job.TaskGroups[0].Tasks {
		if t.Resources == nil {
			continue
		}
		if t.Resources.CPU != nil {
			d.cpu += int64(*t.Resources.CPU)
		}
		if t.Resources.MemoryMB != nil {
			d.memory += int64(*t.Resources.MemoryMB)
		}
		for _, dev := range t.Resources.Devices {
			if dev != nil && (dev.Name == "nvidia/gpu" || dev.Name == "gpu") {
				d.gpu = true
			}
		}
	}
	return d, nil
}

// loadDemand renders the streamer job once with the gateway's variables and
// remembers what a session reserves.
func (s *Scheduler) loadDemand(ctx context.Context) error {
	job, err := s.jobFor(ctx, &record{ID: "capacity-probe", Datacenter: s.edges()[0]})
	if err != nil {
		return err
	}
	d, err := demandOf(job)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.demand, s.demandKnown = d, true
	s.mu.Unlock()
	s.log.Info("session reservation", "cpu_mhz", d.cpu, "memory_mib", d.memory, "gpu_slot", d.gpu)
	return nil
}

// roomOfNode reads a node's schedulable resources and encoder slots.
func roomOfNode(n *nomad.Node) nodeRoom {
	r := nodeRoom{dc: n.Datacenter, slots: map[string]bool{}}
	if n.NodeResources != nil {
		r.cpu, r.memory = n.NodeResources.Cpu.CpuShares, n.NodeResources.Memory.MemoryMB
		for _, d := range n.NodeResources.Devices {
			if !isEncoderGroup(d) {
				continue
			}
			for _, inst := range d.Instances {
				if inst.Healthy {
					r.slots[inst.ID] = true
				}
			}
		}
	}
	if n.ReservedResources != nil {
		r.cpu -= int64(n.ReservedResources.Cpu.CpuShares)
		r.memory -= int64(n.ReservedResources.Memory.MemoryMB)
	}
	return r
}

func isEncoderGroup(d *nomad.NodeDeviceResource) bool {
	if d == nil || d.Vendor != "nvidia" || d.Type != "gpu" {
		return false
	}
	a := d.Attributes["nvenc_h264"]
	return a != nil && a.BoolVal != nil && *a.BoolVal
}

// useOf is what an allocation holds, and whether it holds anything: an
// allocation Nomad means to stop, or whose client finished it, frees its
// resources (Nomad's own rule: Allocation.TerminalStatus).
func useOf(nodeID, desired, client string, res *nomad.AllocatedResources) (allocUse, bool) {
	if desired != nomad.AllocDesiredStatusRun ||
		(client != nomad.AllocClientStatusPending && client != nomad.AllocClientStatusRunning) {
		return allocUse{}, false
	}
	u := allocUse{node: nodeID}
	if res == nil {
		return u, true
	}
	for _, t := range res.Tasks {
		if t == nil {
			continue
		}
		u.cpu += t.Cpu.CpuShares
		u.memory += t.Memory.MemoryMB
		for _, d := range t.Devices {
			if d != nil {
				u.devices = append(u.devices, d.DeviceIDs...)
			}
		}
	}
	return u, true
}

// observeUseLocked records an allocation's use (or that it holds nothing
// now) and recounts the room. Call with s.mu held.
func (s *Scheduler) observeUseLocked(allocID string, u allocUse, live bool) {
	if live {
		s.usage[allocID] = u
	} else {
		delete(s.usage, allocID)
	}
	s.recountLocked()
}

// recountLocked recomputes every edge's room and, when some edge's room
// grew, bumps roomGen so that sessions Nomad refused are tried again.
func (s *Scheduler) recountLocked() {
	room := map[string]int{}
	if s.demandKnown {
		type used struct {
			cpu, memory int64
			devices     map[string]bool
		}
		byNode := map[string]*used{}
		for _, u := range s.usage {
			b := byNode[u.node]
			if b == nil {
				b = &used{devices: map[string]bool{}}
				byNode[u.node] = b
			}
			b.cpu += u.cpu
			b.memory += u.memory
			for _, d := range u.devices {
				b.devices[d] = true
			}
		}
		for id, n := range s.nodes {
			b := byNode[id]
			if b == nil {
				b = &used{}
			}
			fit := 1 << 30
			if s.demand.cpu > 0 {
				fit = min(fit, int((n.cpu-b.cpu)/s.demand.cpu))
			}
			if s.demand.memory > 0 {
				fit = min(fit, int((n.memory-b.memory)/s.demand.memory))
			}
			if s.demand.gpu {
				free := 0
				for slot := range n.slots {
					if !b.devices[slot] {
						free++
					}
				}
				fit = min(fit, free)
			}
			if fit > 0 {
				room[n.dc] += fit
			}
		}
	}
	grew := false
	for dc, n := range room {
		if n > s.room[dc] {
			grew = true
		}
	}
	if !equalCounts(room, s.room) {
		s.room = room
		s.notifyLocked()
	}
	if grew {
		s.roomGen++
		s.poke() // never blocks: fine under s.mu
	}
}

// inflightLocked counts, by edge, sessions placed by the gateway whose
// allocation Nomad has not reported yet: they will take room that the
// count does not show as taken.
func (s *Scheduler) inflightLocked() map[string]int {
	n := map[string]int{}
	for id, r := range s.records {
		if r.Placed && !r.Ended && s.allocs[id] == nil {
			n[r.Datacenter]++
		}
	}
	return n
}

// freeLocked is how many more sessions edge dc takes now: Nomad's room less
// the sessions in flight, within the optional Capacity bound.
func (s *Scheduler) freeLocked(dc string, active, inflight map[string]int) int {
	if s.nodesSeen && s.readyNodes[dc] == 0 {
		return 0
	}
	free := s.room[dc] - inflight[dc]
	if s.cfg.Capacity > 0 {
		free = min(free, s.cfg.Capacity-active[dc]-s.stray)
	}
	return max(0, free)
}
