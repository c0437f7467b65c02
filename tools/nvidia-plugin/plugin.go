package main

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	log "github.com/hashicorp/go-hclog"
	"github.com/hashicorp/nomad/plugins/base"
	"github.com/hashicorp/nomad/plugins/device"
	"github.com/hashicorp/nomad/plugins/shared/hclspec"
	"github.com/hashicorp/nomad/plugins/shared/structs"
)

const (
	pluginName = "metal-nvidia"
	vendor     = "nvidia"
)

var configSpec = hclspec.NewObject(map[string]*hclspec.Spec{
	"fake_dir": hclspec.NewDefault(hclspec.NewAttr("fake_dir", "string", false), hclspec.NewLiteral(`""`)),
	"fingerprint_period": hclspec.NewDefault(
		hclspec.NewAttr("fingerprint_period", "string", false), hclspec.NewLiteral(`"10s"`)),
	"slots":           hclspec.NewBlockAttrs("slots", "number", false),
	"slot_memory_mib": hclspec.NewDefault(hclspec.NewAttr("slot_memory_mib", "number", false), hclspec.NewLiteral("512")),
})

// Config is the plugin block of the Nomad client:
//
//	plugin "metal-nvidia" {
//	  config {
//	    fake_dir           = "/etc/metal/fake-gpus" # GPU-less machines only
//	    fingerprint_period = "10s"
//	    # sessions per GPU, by model (NVML's name) or "default"; see slots.go
//	    slots {
//	      "NVIDIA L4" = 8
//	      default     = 2
//	    }
//	    slot_memory_mib    = 512 # framebuffer one session needs
//	  }
//	}
type Config struct {
	FakeDir           string         `codec:"fake_dir"`
	FingerprintPeriod string         `codec:"fingerprint_period"`
	Slots             map[string]int `codec:"slots"`
	SlotMemoryMiB     int64          `codec:"slot_memory_mib"`
}

// Plugin is the device plugin.
type Plugin struct {
	log    log.Logger
	source Source
	period time.Duration

	slots   map[string]int
	slotMiB int64

	mu    sync.RWMutex
	known map[string]GPU // by UUID
}

// NewPlugin returns an unconfigured plugin.
func NewPlugin(l log.Logger) *Plugin {
	return &Plugin{log: l.Named(pluginName), source: &nvmlSource{log: l.Named(pluginName)}, period: 10 * time.Second,
		slotMiB: defaultSlotMemoryMiB, known: map[string]GPU{}}
}

// PluginInfo describes the plugin.
func (p *Plugin) PluginInfo() (*base.PluginInfoResponse, error) {
	return &base.PluginInfoResponse{
		Type:              base.PluginTypeDevice,
		PluginApiVersions: []string{device.ApiVersion010},
		PluginVersion:     "v0.1.0",
		Name:              pluginName,
	}, nil
}

// ConfigSchema is the plugin block's schema.
func (p *Plugin) ConfigSchema() (*hclspec.Spec, error) { return configSpec, nil }

// SetConfig applies the plugin block.
func (p *Plugin) SetConfig(c *base.Config) error {
	var cfg Config
	if len(c.PluginConfig) > 0 {
		if err := base.MsgPackDecode(c.PluginConfig, &cfg); err != nil {
			return err
		}
	}
	if cfg.FingerprintPeriod != "" {
		d, err := time.ParseDuration(cfg.FingerprintPeriod)
		if err != nil || d <= 0 {
			return fmt.Errorf("fingerprint_period %q: want a positive duration", cfg.FingerprintPeriod)
		}
		p.period = d
	}
	for model, n := range cfg.Slots {
		if n < 1 || n > 64 {
			return fmt.Errorf("slots[%q] = %d: want 1 to 64 sessions per GPU", model, n)
		}
	}
	if cfg.SlotMemoryMiB < 0 {
		return fmt.Errorf("slot_memory_mib %d: want 0 (no check) or more", cfg.SlotMemoryMiB)
	}
	p.slots, p.slotMiB = cfg.Slots, cfg.SlotMemoryMiB
	if len(c.PluginConfig) == 0 {
		p.slotMiB = defaultSlotMemoryMiB
	}
	if cfg.FakeDir != "" {
		p.source = dirSource{dir: cfg.FakeDir}
		p.log.Info("reading fake GPUs", "dir", cfg.FakeDir)
	}
	return nil
}

// Fingerprint reports the GPUs now and whenever they change.
func (p *Plugin) Fingerprint(ctx context.Context) (<-chan *device.FingerprintResponse, error) {
	out := make(chan *device.FingerprintResponse)
	go func() {
		defer close(out)
		var last []*device.DeviceGroup
		first := true
		t := time.NewTimer(0)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				t.Reset(p.period)
			}
			gpus, err := p.source.GPUs()
			if errors.Is(err, ErrNoDriver) {
				if first {
					p.log.Info("no NVIDIA driver; reporting no GPUs", "reason", err)
				}
				gpus, err = nil, nil
			}
			if err != nil {
				p.log.Error("list GPUs", "error", err)
				continue // keep the last good fingerprint; Nomad stays healthy
			}
			p.remember(gpus)
			groups := p.groups(gpus)
			if !first && reflect.DeepEqual(groups, last) {
				continue
			}
			first, last = false, groups
			select {
			case out <- device.NewFingerprint(groups...):
			case <-ctx.Done():
				return
			}
		}
	}()
	return out, nil
}

// instanceIDs are the device instances a GPU is offered as.
func (p *Plugin) instanceIDs(g GPU) []string {
	if !g.NVENCH264 {
		return []string{g.ID}
	}
	n, _ := slotsFor(g, p.slots, p.slotMiB)
	ids := make([]string, n)
	for k := range ids {
		ids[k] = slotID(g.ID, k)
	}
	return ids
}

func (p *Plugin) remember(gpus []GPU) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.known = map[string]GPU{}
	for _, g := range gpus {
		p.known[g.ID] = g
	}
}

// groups turns GPUs into Nomad device groups, one per model, with the
// model's capabilities as attributes and one device instance per encoder
// slot ("<uuid>/slot-<k>"). Attributes describe what a GPU can do, never
// its current load, so they stay put while sessions come and go. A GPU
// without NVENC is one instance (it never matches the streamer's
// constraint). An unhealthy GPU's slots are all unhealthy.
func (p *Plugin) groups(gpus []GPU) []*device.DeviceGroup {
	byName := map[string]*device.DeviceGroup{}
	var names []string
	for _, g := range gpus {
		slots, why := 1, ""
		if g.NVENCH264 {
			slots, why = slotsFor(g, p.slots, p.slotMiB)
			if why != "" {
				p.log.Warn("encoder slots lowered to fit memory", "gpu", g.ID, "model", g.Model, "why", why)
			}
		}
		name := groupName(g.Model)
		grp, ok := byName[name]
		if !ok {
			grp = &device.DeviceGroup{
				Vendor: vendor, Type: device.DeviceTypeGPU, Name: name,
				Attributes: map[string]*structs.Attribute{
					"model":           structs.NewStringAttribute(g.Model),
					"memory":          structs.NewIntAttribute(g.MemoryMiB, structs.UnitMiB),
					"driver_version":  structs.NewStringAttribute(g.Driver),
					"nvenc_h264":      structs.NewBoolAttribute(g.NVENCH264),
					"nvenc_hevc":      structs.NewBoolAttribute(g.NVENCHEVC),
					"nvenc_av1":       structs.NewBoolAttribute(g.NVENCAV1),
					"encoder_engines": structs.NewIntAttribute(int64(g.Engines), ""),
					// Sessions one GPU of this group takes (its instances
					// per GPU), and the framebuffer each one is given.
					"encoder_sessions_max": structs.NewIntAttribute(int64(slots), ""),
					"slot_memory":          structs.NewIntAttribute(p.slotMiB, structs.UnitMiB),
				},
			}
			byName[name] = grp
			names = append(names, name)
		}
		ids := []string{g.ID}
		if g.NVENCH264 {
			ids = ids[:0]
			for k := 0; k < slots; k++ {
				ids = append(ids, slotID(g.ID, k))
			}
		}
		for _, id := range ids {
			d := &device.Device{ID: id, Healthy: g.healthy()}
			if !d.Healthy {
				d.HealthDesc = g.HealthDesc
			}
			if g.PCIBusID != "" {
				d.HwLocality = &device.DeviceLocality{PciBusID: g.PCIBusID}
			}
			grp.Devices = append(grp.Devices, d)
		}
	}
	sort.Strings(names)
	out := make([]*device.DeviceGroup, 0, len(names))
	for _, n := range names {
		out = append(out, byName[n])
	}
	return out
}

// Reserve maps the slots Nomad chose to their GPUs and tells the task
// which GPU is its own:
//   - NVIDIA_VISIBLE_DEVICES, the GPU UUIDs, which the NVIDIA container
//     runtime reads to mount those GPUs (docker driver);
//   - NVIDIA_DRIVER_CAPABILITIES with "video", without which that runtime
//     mounts no encoder library (libnvidia-encode);
//   - CUDA_VISIBLE_DEVICES, the same UUIDs, which the CUDA driver honours
//     in and out of containers: under raw_exec, where
//     NVIDIA_VISIBLE_DEVICES means nothing, it is what confines nvh264enc
//     (cuda-device-id 0) to the reserved GPU;
//   - METAL_GPU_INDEX, the GPUs' NVML (PCI bus order) indexes on the host,
//     with CUDA_DEVICE_ORDER=PCI_BUS_ID so that CUDA numbers them alike.
func (p *Plugin) Reserve(ids []string) (*device.ContainerReservation, error) {
	if len(ids) == 0 {
		return nil, errors.New("no device ids given")
	}
	p.mu.RLock()
	defer p.mu.RUnlock()
	var uuids, indexes []string
	seen := map[string]bool{}
	for _, id := range ids {
		uuid := gpuOfSlot(id)
		g, ok := p.known[uuid]
		if !ok {
			return nil, fmt.Errorf("unknown GPU %q (device %q)", uuid, id)
		}
		if seen[uuid] {
			continue
		}
		seen[uuid] = true
		uuids = append(uuids, uuid)
		indexes = append(indexes, strconv.Itoa(g.Index))
	}
	return &device.ContainerReservation{Envs: map[string]string{
		"NVIDIA_VISIBLE_DEVICES":     strings.Join(uuids, ","),
		"NVIDIA_DRIVER_CAPABILITIES": "compute,utility,video",
		"CUDA_VISIBLE_DEVICES":       strings.Join(uuids, ","),
		"CUDA_DEVICE_ORDER":          "PCI_BUS_ID",
		"METAL_GPU_INDEX":            strings.Join(indexes, ","),
	}}, nil
}

// Stats reports encoder utilisation and sessions per GPU every interval.
func (p *Plugin) Stats(ctx context.Context, interval time.Duration) (<-chan *device.StatsResponse, error) {
	out := make(chan *device.StatsResponse)
	go func() {
		defer close(out)
		t := time.NewTimer(0)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				t.Reset(interval)
			}
			gpus, err := p.source.GPUs()
			if err != nil {
				gpus = nil
			}
			groups := map[string]*device.DeviceGroupStats{}
			now := time.Now()
			for _, g := range gpus {
				name := groupName(g.Model)
				gs, ok := groups[name]
				if !ok {
					gs = &device.DeviceGroupStats{Vendor: vendor, Type: device.DeviceTypeGPU, Name: name, InstanceStats: map[string]*device.DeviceStats{}}
					groups[name] = gs
				}
				util, sessions, free := g.EncoderUtilization, g.EncoderSessions, g.EncoderCapacity
				st := &device.DeviceStats{
					Summary: &structs.StatValue{IntNumeratorVal: &util, Unit: "%", Desc: "Encoder utilization"},
					Stats: &structs.StatObject{Attributes: map[string]*structs.StatValue{
						"encoder_utilization": {IntNumeratorVal: &util, Unit: "%", Desc: "Encoder utilization"},
						"encoder_sessions":    {IntNumeratorVal: &sessions, Desc: "Active encoder sessions"},
						"encoder_capacity":    {IntNumeratorVal: &free, Unit: "%", Desc: "Remaining H.264 encoder capacity"},
					}},
					Timestamp: now,
				}
				// Every slot of a GPU shares its encoder: each reports it.
				for _, id := range p.instanceIDs(g) {
					gs.InstanceStats[id] = st
				}
			}
			resp := &device.StatsResponse{}
			for _, gs := range groups {
				resp.Groups = append(resp.Groups, gs)
			}
			select {
			case out <- resp:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out, nil
}
