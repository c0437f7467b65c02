package main

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sort"
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
})

// Config is the plugin block of the Nomad client:
//
//	plugin "metal-nvidia" {
//	  config {
//	    fake_dir           = "/etc/metal/fake-gpus" # GPU-less machines only
//	    fingerprint_period = "10s"
//	  }
//	}
type Config struct {
	FakeDir           string `codec:"fake_dir"`
	FingerprintPeriod string `codec:"fingerprint_period"`
}

// Plugin is the device plugin.
type Plugin struct {
	log    log.Logger
	source Source
	period time.Duration

	mu    sync.RWMutex
	known map[string]GPU
}

// NewPlugin returns an unconfigured plugin.
func NewPlugin(l log.Logger) *Plugin {
	return &Plugin{log: l.Named(pluginName), source: &nvmlSource{}, period: 10 * time.Second, known: map[string]GPU{}}
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
			groups := Groups(gpus)
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

func (p *Plugin) remember(gpus []GPU) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.known = map[string]GPU{}
	for _, g := range gpus {
		p.known[g.ID] = g
	}
}

// Groups turns GPUs into Nomad device groups, one per model, with the
// encoder facts as attributes.
func Groups(gpus []GPU) []*device.DeviceGroup {
	byName := map[string]*device.DeviceGroup{}
	var names []string
	for _, g := range gpus {
		name := groupName(g.Model)
		grp, ok := byName[name]
		if !ok {
			grp = &device.DeviceGroup{
				Vendor: vendor, Type: device.DeviceTypeGPU, Name: name,
				Attributes: map[string]*structs.Attribute{
					"model":            structs.NewStringAttribute(g.Model),
					"memory":           structs.NewIntAttribute(g.MemoryMiB, structs.UnitMiB),
					"driver_version":   structs.NewStringAttribute(g.Driver),
					"nvenc_h264":       structs.NewBoolAttribute(g.NVENCH264),
					"nvenc_hevc":       structs.NewBoolAttribute(g.NVENCHEVC),
					"nvenc_av1":        structs.NewBoolAttribute(g.NVENCAV1),
					"encoder_capacity": structs.NewIntAttribute(g.EncoderCapacity, ""),
				},
			}
			byName[name] = grp
			names = append(names, name)
		}
		healthy := g.Healthy == nil || *g.Healthy
		d := &device.Device{ID: g.ID, Healthy: healthy}
		if !healthy {
			d.HealthDesc = "marked unhealthy"
		}
		if g.PCIBusID != "" {
			d.HwLocality = &device.DeviceLocality{PciBusID: g.PCIBusID}
		}
		grp.Devices = append(grp.Devices, d)
	}
	sort.Strings(names)
	out := make([]*device.DeviceGroup, 0, len(names))
	for _, n := range names {
		out = append(out, byName[n])
	}
	return out
}

// Reserve hands the task its GPUs through NVIDIA_VISIBLE_DEVICES, which the
// NVIDIA container runtime (and the streamer, under raw_exec) reads.
func (p *Plugin) Reserve(ids []string) (*device.ContainerReservation, error) {
	if len(ids) == 0 {
		return nil, errors.New("no device ids given")
	}
	p.mu.RLock()
	defer p.mu.RUnlock()
	for _, id := range ids {
		if _, ok := p.known[id]; !ok {
			return nil, fmt.Errorf("unknown GPU %q", id)
		}
	}
	return &device.ContainerReservation{Envs: map[string]string{"NVIDIA_VISIBLE_DEVICES": strings.Join(ids, ",")}}, nil
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
				util, sessions := g.EncoderUtilization, g.EncoderSessions
				gs.InstanceStats[g.ID] = &device.DeviceStats{
					Summary: &structs.StatValue{IntNumeratorVal: &util, Unit: "%", Desc: "Encoder utilization"},
					Stats: &structs.StatObject{Attributes: map[string]*structs.StatValue{
						"encoder_utilization": {IntNumeratorVal: &util, Unit: "%", Desc: "Encoder utilization"},
						"encoder_sessions":    {IntNumeratorVal: &sessions, Desc: "Active encoder sessions"},
					}},
					Timestamp: now,
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
