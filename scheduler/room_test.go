package scheduler

import (
	"testing"
	"time"

	nomad "github.com/hashicorp/nomad/api"
)

func boolAttr(b bool) *nomad.Attribute { return &nomad.Attribute{BoolVal: &b} }

func gpuNode(dc string, cpu, mem int64, nvenc bool, slots map[string]bool) *nomad.Node {
	var inst []*nomad.NodeDevice
	for id, healthy := range slots {
		inst = append(inst, &nomad.NodeDevice{ID: id, Healthy: healthy})
	}
	return &nomad.Node{
		Datacenter: dc,
		NodeResources: &nomad.NodeResources{
			Cpu:    nomad.NodeCpuResources{CpuShares: cpu},
			Memory: nomad.NodeMemoryResources{MemoryMB: mem},
			Devices: []*nomad.NodeDeviceResource{{
				Vendor: "nvidia", Type: "gpu", Name: "RTX-A4000",
				Attributes: map[string]*nomad.Attribute{"nvenc_h264": boolAttr(nvenc)},
				Instances:  inst,
			}},
		},
		ReservedResources: &nomad.NodeReservedResources{
			Cpu: nomad.NodeReservedCpuResources{CpuShares: 100}, Memory: nomad.NodeReservedMemoryResources{MemoryMB: 256},
		},
	}
}

func taskUse(cpu, mem int64, devices ...string) *nomad.AllocatedResources {
	return &nomad.AllocatedResources{Tasks: map[string]*nomad.AllocatedTaskResources{"t": {
		Cpu: nomad.AllocatedCpuResources{CpuShares: cpu}, Memory: nomad.AllocatedMemoryResources{MemoryMB: mem},
		Devices: []*nomad.AllocatedDeviceResource{{Vendor: "nvidia", Type: "gpu", Name: "RTX-A4000", DeviceIDs: devices}},
	}}}
}

// TestRoomIsWhatNomadCanPlace: the room on an edge is the scarcest of CPU,
// memory and free healthy encoder slots, node by node, after every live
// allocation (of any job); stopped or finished allocations hold nothing.
func TestRoomIsWhatNomadCanPlace(t *testing.T) {
	slots := map[string]bool{"GPU-a/slot-0": true, "GPU-a/slot-1": true, "GPU-a/slot-2": true, "GPU-b/slot-0": false}
	tests := []struct {
		name   string
		demand demand
		nodes  map[string]*nomad.Node
		allocs map[string][4]any // node, desired, client, resources
		want   map[string]int
	}{
		{"cpu bound, no gpu", demand{cpu: 1000, memory: 256}, map[string]*nomad.Node{"n1": gpuNode("dc1", 4100, 8192, true, nil)},
			nil, map[string]int{"dc1": 4}},
		{"other jobs take cpu", demand{cpu: 1000, memory: 256}, map[string]*nomad.Node{"n1": gpuNode("dc1", 4100, 8192, true, nil)},
			map[string][4]any{"gw": {"n1", "run", "running", taskUse(700, 128)}}, map[string]int{"dc1": 3}},
		{"finished allocations free it", demand{cpu: 1000, memory: 256}, map[string]*nomad.Node{"n1": gpuNode("dc1", 4100, 8192, true, nil)},
			map[string][4]any{
				"done":    {"n1", "run", "complete", taskUse(3000, 128)},
				"stopped": {"n1", "stop", "running", taskUse(3000, 128)},
			}, map[string]int{"dc1": 4}},
		{"memory bound", demand{cpu: 100, memory: 3000}, map[string]*nomad.Node{"n1": gpuNode("dc1", 4100, 8192, true, nil)},
			nil, map[string]int{"dc1": 2}},
		{"healthy free slots bound", demand{cpu: 100, memory: 100, gpu: true}, map[string]*nomad.Node{"n1": gpuNode("dc1", 9000, 8192, true, slots)},
			map[string][4]any{"s1": {"n1", "run", "pending", taskUse(100, 100, "GPU-a/slot-1")}}, map[string]int{"dc1": 2}},
		{"no nvenc, no slots", demand{cpu: 100, memory: 100, gpu: true}, map[string]*nomad.Node{"n1": gpuNode("dc1", 9000, 8192, false, slots)},
			nil, map[string]int{}},
		{"edges summed apart", demand{cpu: 1000, memory: 100}, map[string]*nomad.Node{
			"n1": gpuNode("dc1", 2100, 8192, false, nil), "n2": gpuNode("dc1", 1100, 8192, false, nil), "n3": gpuNode("dc2", 3100, 8192, false, nil),
		}, nil, map[string]int{"dc1": 3, "dc2": 3}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &Scheduler{kick: make(chan struct{}, 1), changed: make(chan struct{}), usage: map[string]allocUse{}, nodes: map[string]nodeRoom{},
				room: map[string]int{}, demand: tt.demand, demandKnown: true}
			for id, n := range tt.nodes {
				s.nodes[id] = roomOfNode(n)
			}
			for id, a := range tt.allocs {
				u, live := useOf(a[0].(string), a[1].(string), a[2].(string), a[3].(*nomad.AllocatedResources))
				s.observeUseLocked(id, u, live)
			}
			s.recountLocked()
			if !equalCounts(s.room, tt.want) {
				t.Fatalf("room %v, want %v", s.room, tt.want)
			}
		})
	}
}

// TestRoomGrowthRetriesRefused: roomGen moves only when some edge's room
// grows, which is what lets a session Nomad refused be offered again.
func TestRoomGrowthRetriesRefused(t *testing.T) {
	s := &Scheduler{kick: make(chan struct{}, 1), changed: make(chan struct{}), usage: map[string]allocUse{}, room: map[string]int{},
		nodes: map[string]nodeRoom{"n1": roomOfNode(gpuNode("dc1", 2100, 8192, false, nil))}, demand: demand{cpu: 1000}, demandKnown: true}
	s.recountLocked()
	gen := s.roomGen
	s.observeUseLocked("a", allocUse{node: "n1", cpu: 1000}, true)
	if s.roomGen != gen || s.room["dc1"] != 1 {
		t.Fatalf("taking room: gen %d→%d room %v", gen, s.roomGen, s.room)
	}
	s.observeUseLocked("a", allocUse{}, false)
	if s.roomGen != gen+1 || s.room["dc1"] != 2 {
		t.Fatalf("freeing room: gen %d→%d room %v, want a bump", gen, s.roomGen, s.room)
	}
}

// TestFreeCountsInflightAndBound: sessions placed but not yet seen as
// allocations take room, and -capacity bounds an edge.
func TestFreeCountsInflightAndBound(t *testing.T) {
	s := &Scheduler{room: map[string]int{"dc1": 5}, readyNodes: map[string]int{"dc1": 1}, nodesSeen: true}
	if got := s.freeLocked("dc1", map[string]int{"dc1": 2}, map[string]int{"dc1": 2}); got != 3 {
		t.Fatalf("free with 2 in flight = %d, want 3", got)
	}
	s.cfg.Capacity = 3
	if got := s.freeLocked("dc1", map[string]int{"dc1": 2}, map[string]int{"dc1": 0}); got != 1 {
		t.Fatalf("free under a bound of 3 with 2 active = %d, want 1", got)
	}
	if got := s.freeLocked("dc2", nil, nil); got != 0 {
		t.Fatalf("free on an edge with no ready node = %d", got)
	}
}

// TestQueueOrderSurvivesRefusals: the oldest waiting session is placed
// first; one Nomad refused holds its edge while it waits out its backoff
// and while it is on trial again, so nobody behind it overtakes; room that
// grows ends its backoff at once.
func TestQueueOrderSurvivesRefusals(t *testing.T) {
	s := &Scheduler{cfg: Config{Datacenter: "dc1"}, changed: make(chan struct{}), kick: make(chan struct{}, 1),
		records: map[string]*record{}, allocs: map[string]*allocInfo{},
		room: map[string]int{"dc1": 2}, readyNodes: map[string]int{"dc1": 1}, nodesSeen: true}
	a := &record{ID: "a", Prefs: []string{"dc1"}, createIndex: 1}
	b := &record{ID: "b", Prefs: []string{"dc1"}, createIndex: 2}
	s.records["a"], s.records["b"] = a, b
	if r := s.nextToPlace(); r != a {
		t.Fatalf("first placed %v, want the oldest (a)", r)
	}
	// Nomad refuses a: it waits out a backoff, first in line.
	a.Placed, a.Datacenter, a.refusals, a.refusedGen, a.retryAt = false, "", 1, s.roomGen, time.Now().Add(time.Hour)
	if r := s.nextToPlace(); r != nil {
		t.Fatalf("%s placed while the refused a waits on its edge: it overtook a", r.ID)
	}
	// Room grows (an allocation ended): a is tried again at once, and
	// while it is on trial (registered, no allocation) b still waits.
	s.roomGen++
	if r := s.nextToPlace(); r != a {
		t.Fatalf("after room grew, placed %v, want a", r)
	}
	if r := s.nextToPlace(); r != nil {
		t.Fatalf("%s placed while a is on trial on the same edge", r.ID)
	}
	// Nomad places a: the hold ends and b goes next.
	s.allocs["a"] = &allocInfo{id: "alloc-a"}
	a.refusals = 0
	if r := s.nextToPlace(); r != b {
		t.Fatalf("after a's allocation, placed %v, want b", r)
	}
	// A purge in flight holds the edge too.
	c := &record{ID: "c", Prefs: []string{"dc1"}, createIndex: 3, purging: true}
	d := &record{ID: "d", Prefs: []string{"dc1"}, createIndex: 4}
	s.records["c"], s.records["d"] = c, d
	s.room["dc1"] = 10
	if r := s.nextToPlace(); r != nil {
		t.Fatalf("%s placed while c's refused job is being purged", r.ID)
	}
}

// TestPositionIgnoresAdmissionsInFlight: a record this gateway is still
// admitting has no CreateIndex yet; the queue's positions are the same
// with it as without, as they are at every other gateway.
func TestPositionIgnoresAdmissionsInFlight(t *testing.T) {
	s := &Scheduler{records: map[string]*record{}}
	a := &record{ID: "a", createIndex: 10}
	b := &record{ID: "b", createIndex: 20}
	placed := &record{ID: "p", createIndex: 5, Placed: true}
	s.records["a"], s.records["b"], s.records["p"] = a, b, placed
	before := []int{s.positionLocked(a), s.positionLocked(b)}
	s.records["n"] = &record{ID: "n", creating: true}
	after := []int{s.positionLocked(a), s.positionLocked(b)}
	if before[0] != 1 || before[1] != 2 || after[0] != before[0] || after[1] != before[1] {
		t.Fatalf("positions of a, b: %v before an admission in flight, %v during it; want [1 2] both", before, after)
	}
}
