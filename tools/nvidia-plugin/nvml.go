package main

import (
	"fmt"
	"sync"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/hashicorp/go-hclog"
)

// nvmlSource reads GPUs through NVML (libnvidia-ml, loaded at run time).
//
// Capability comes from the model table (slots.go) and, for a model it does
// not know, from the first time NVML shows the GPU an encoder (remaining
// capacity or sessions above zero), remembered from then on: NVML's
// encoder capacity is what is left now, so a busy card would otherwise look
// as if it had no NVENC.
//
// Health: a goroutine waits on NVML's critical XID events; any XID but the
// ones an application causes (see xidHarmless) marks that GPU unhealthy
// until the plugin restarts, and a GPU that NVML no longer finds by UUID is
// reported unhealthy too, so Nomad stops placing on it.
type nvmlSource struct {
	log     hclog.Logger
	once    sync.Once
	initErr error

	mu        sync.Mutex
	hasNVENC  map[string]bool   // by UUID, sticky once true
	hasHEVC   map[string]bool   // by UUID, sticky once true
	hasAV1    map[string]bool   // by UUID, sticky once true
	unhealthy map[string]string // by UUID: why
	seen      map[string]GPU    // every GPU ever listed, by UUID
}

func (n *nvmlSource) init() error {
	n.once.Do(func() {
		if ret := nvml.Init(); ret != nvml.SUCCESS {
			n.initErr = fmt.Errorf("%w: %s", ErrNoDriver, nvml.ErrorString(ret))
			return
		}
		n.hasNVENC, n.hasHEVC, n.hasAV1 = map[string]bool{}, map[string]bool{}, map[string]bool{}
		n.unhealthy, n.seen = map[string]string{}, map[string]GPU{}
		if n.log == nil {
			n.log = hclog.NewNullLogger()
		}
		go n.watchXID()
	})
	return n.initErr
}

func (n *nvmlSource) GPUs() ([]GPU, error) {
	if err := n.init(); err != nil {
		return nil, err
	}
	driver, _ := nvml.SystemGetDriverVersion()
	count, ret := nvml.DeviceGetCount()
	if ret != nvml.SUCCESS {
		return nil, fmt.Errorf("nvml device count: %s", nvml.ErrorString(ret))
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	present := map[string]bool{}
	var out []GPU
	for i := 0; i < count; i++ {
		dev, ret := nvml.DeviceGetHandleByIndex(i)
		if ret != nvml.SUCCESS {
			continue
		}
		g := GPU{Driver: driver, Index: i}
		g.ID, _ = dev.GetUUID()
		if g.ID == "" {
			continue
		}
		g.Model, _ = dev.GetName()
		if mem, ret := dev.GetMemoryInfo(); ret == nvml.SUCCESS {
			g.MemoryMiB = int64(mem.Total / (1 << 20))
		}
		if pci, ret := dev.GetPciInfo(); ret == nvml.SUCCESS {
			g.PCIBusID = fmt.Sprintf("%08x:%02x:%02x.0", pci.Domain, pci.Bus, pci.Device)
		}
		capacity := func(t nvml.EncoderType) int64 {
			c, ret := dev.GetEncoderCapacity(t)
			if ret != nvml.SUCCESS {
				return 0
			}
			return int64(c)
		}
		g.EncoderCapacity = capacity(nvml.ENCODER_QUERY_H264)
		if u, _, ret := dev.GetEncoderUtilization(); ret == nvml.SUCCESS {
			g.EncoderUtilization = int64(u)
		}
		if sessions, _, _, ret := dev.GetEncoderStats(); ret == nvml.SUCCESS {
			g.EncoderSessions = int64(sessions)
		}
		facts, known := factsFor(g.Model)
		switch {
		case known:
			n.hasNVENC[g.ID] = facts.engines > 0
			g.Engines = facts.engines
		case g.EncoderCapacity > 0 || g.EncoderSessions > 0:
			n.hasNVENC[g.ID] = true
		}
		g.NVENCH264 = n.hasNVENC[g.ID]
		// HEVC and AV1 have no table: any moment NVML shows capacity for
		// them proves the codec, remembered from then on (capability, not
		// load: a busy card does not lose them).
		if g.NVENCH264 && capacity(nvml.ENCODER_QUERY_HEVC) > 0 {
			n.hasHEVC[g.ID] = true
		}
		if g.NVENCH264 && capacity(nvml.ENCODER_QUERY_AV1) > 0 {
			n.hasAV1[g.ID] = true
		}
		g.NVENCHEVC, g.NVENCAV1 = n.hasHEVC[g.ID], n.hasAV1[g.ID]
		if why, bad := n.unhealthy[g.ID]; bad {
			f := false
			g.Healthy, g.HealthDesc = &f, why
		}
		present[g.ID] = true
		n.seen[g.ID] = g
		out = append(out, g)
	}
	// A GPU that fell off the bus stays listed, unhealthy, so that Nomad
	// stops placing on it instead of forgetting it silently.
	for id, g := range n.seen {
		if !present[id] {
			f := false
			g.Healthy, g.HealthDesc = &f, "GPU no longer visible to NVML"
			out = append(out, g)
		}
	}
	return out, nil
}

// xidHarmless are XIDs an application causes (a bad kernel, an engine
// reset it asked for, a preemption): the GPU itself is fine. The same list
// as Kubernetes' NVIDIA device plugin.
var xidHarmless = map[uint64]bool{13: true, 31: true, 43: true, 45: true, 68: true, 109: true}

func (n *nvmlSource) watchXID() {
	set, ret := nvml.EventSetCreate()
	if ret != nvml.SUCCESS {
		n.log.Error("XID events unavailable: GPU health follows only GPUs leaving the bus", "error", nvml.ErrorString(ret))
		return
	}
	defer set.Free()
	count, _ := nvml.DeviceGetCount()
	for i := 0; i < count; i++ {
		dev, ret := nvml.DeviceGetHandleByIndex(i)
		if ret != nvml.SUCCESS {
			continue
		}
		if ret := dev.RegisterEvents(nvml.EventTypeXidCriticalError, set); ret != nvml.SUCCESS {
			uuid, _ := dev.GetUUID()
			n.log.Warn("no XID events for GPU", "gpu", uuid, "error", nvml.ErrorString(ret))
		}
	}
	for {
		ev, ret := set.Wait(5000)
		if ret == nvml.ERROR_TIMEOUT {
			continue
		}
		if ret != nvml.SUCCESS {
			n.log.Error("waiting for XID events failed; GPU health follows only GPUs leaving the bus", "error", nvml.ErrorString(ret))
			return
		}
		if ev.EventType != nvml.EventTypeXidCriticalError || xidHarmless[ev.EventData] {
			continue
		}
		uuid, ret := ev.Device.GetUUID()
		n.mu.Lock()
		n.log.Warn("GPU XID error: marking unhealthy", "gpu", uuid, "xid", ev.EventData)
		if ret == nvml.SUCCESS {
			n.unhealthy[uuid] = fmt.Sprintf("XID %d", ev.EventData)
		} else {
			// An event for no device in particular: every GPU is suspect.
			for id := range n.seen {
				n.unhealthy[id] = fmt.Sprintf("XID %d", ev.EventData)
			}
		}
		n.mu.Unlock()
	}
}
