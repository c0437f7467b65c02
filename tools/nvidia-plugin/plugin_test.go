package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	log "github.com/hashicorp/go-hclog"
	"github.com/hashicorp/nomad/plugins/base"
	"github.com/hashicorp/nomad/plugins/device"
)

// firstFingerprint configures a plugin (nil: no plugin block) and returns
// it with its first fingerprint.
func firstFingerprint(t *testing.T, c *Config) (*Plugin, *device.FingerprintResponse) {
	t.Helper()
	p := NewPlugin(log.NewNullLogger())
	var cfg []byte
	if c != nil {
		if err := base.MsgPackEncode(&cfg, *c); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.SetConfig(&base.Config{PluginConfig: cfg}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	t.Cleanup(cancel)
	ch, err := p.Fingerprint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return p, <-ch
}

func writeFake(t *testing.T, dir, name, body string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestFingerprintGroupsEncoderFacts(t *testing.T) {
	dir := t.TempDir()
	writeFake(t, dir, "a.json", `{"id":"GPU-a","model":"RTX A4000","memory_mib":16376,"nvenc_h264":true,"nvenc_hevc":true,"encoder_capacity":100}`)
	writeFake(t, dir, "b.json", `{"id":"GPU-b","model":"RTX A4000","memory_mib":16376,"nvenc_h264":true,"nvenc_hevc":true,"encoder_capacity":0,"encoder_sessions":6}`)
	writeFake(t, dir, "h.json", `{"id":"GPU-h","model":"NVIDIA H100 80GB HBM3","memory_mib":81559}`)
	p, fp := firstFingerprint(t, &Config{FakeDir: dir, FingerprintPeriod: "1s", Slots: map[string]int{"RTX A4000": 4}})
	if fp.Error != nil || len(fp.Devices) != 2 {
		t.Fatalf("fingerprint %+v", fp)
	}
	a4000, h100 := fp.Devices[1], fp.Devices[0] // sorted by name
	if h100.Name != "NVIDIA-H100-80GB-HBM3" || len(h100.Devices) != 1 || *h100.Attributes["nvenc_h264"].Bool {
		t.Fatalf("H100 group %+v: must show no NVENC", h100)
	}
	if a4000.Vendor != "nvidia" || a4000.Type != "gpu" || !*a4000.Attributes["nvenc_h264"].Bool ||
		*a4000.Attributes["memory"].Int != 16376 || a4000.Attributes["memory"].Unit != "MiB" ||
		*a4000.Attributes["encoder_sessions_max"].Int != 4 {
		t.Fatalf("A4000 group %+v", a4000)
	}
	// Capability, not load: a card with no encoder capacity left (GPU-b is
	// busy) is as able as an idle one, and no attribute carries the load.
	if _, ok := a4000.Attributes["encoder_capacity"]; ok {
		t.Fatal("encoder_capacity (current load) is a fingerprint attribute")
	}
	var ids []string
	for _, d := range a4000.Devices {
		ids = append(ids, d.ID)
		if !d.Healthy {
			t.Fatalf("slot %s unhealthy", d.ID)
		}
	}
	want := []string{"GPU-a/slot-0", "GPU-a/slot-1", "GPU-a/slot-2", "GPU-a/slot-3", "GPU-b/slot-0", "GPU-b/slot-1", "GPU-b/slot-2", "GPU-b/slot-3"}
	if strings.Join(ids, " ") != strings.Join(want, " ") {
		t.Fatalf("A4000 instances %v, want %v", ids, want)
	}
	for _, g := range fp.Devices {
		if err := g.Validate(); err != nil {
			t.Fatal(err)
		}
	}
	res, err := p.Reserve([]string{"GPU-b/slot-2"})
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range map[string]string{
		"NVIDIA_VISIBLE_DEVICES": "GPU-b", "CUDA_VISIBLE_DEVICES": "GPU-b", "CUDA_DEVICE_ORDER": "PCI_BUS_ID", "METAL_GPU_INDEX": "1",
	} {
		if res.Envs[k] != v {
			t.Errorf("reserve: %s = %q, want %q", k, res.Envs[k], v)
		}
	}
	if caps := res.Envs["NVIDIA_DRIVER_CAPABILITIES"]; !strings.Contains(caps, "video") {
		t.Errorf("NVIDIA_DRIVER_CAPABILITIES %q lacks video: the runtime would mount no encoder library", caps)
	}
	res, err = p.Reserve([]string{"GPU-a/slot-0", "GPU-a/slot-3", "GPU-b/slot-0"})
	if err != nil || res.Envs["NVIDIA_VISIBLE_DEVICES"] != "GPU-a,GPU-b" || res.Envs["METAL_GPU_INDEX"] != "0,1" {
		t.Fatalf("reserve of two GPUs' slots = %+v, %v", res, err)
	}
	if _, err := p.Reserve([]string{"GPU-zzz/slot-0"}); err == nil {
		t.Fatal("reserved an unknown GPU")
	}
}

func TestSlotsFitMemoryAndDefaults(t *testing.T) {
	for _, tc := range []struct {
		gpu        GPU
		configured map[string]int
		slotMiB    int64
		want       int
	}{
		{GPU{Model: "Tesla T4", MemoryMiB: 15360}, nil, 512, 6},                               // table
		{GPU{Model: "NVIDIA L4", MemoryMiB: 23034}, map[string]int{"NVIDIA L4": 10}, 512, 10}, // config wins
		{GPU{Model: "NVIDIA GeForce RTX 4090", MemoryMiB: 24564}, nil, 512, 3},                // driver's session cap
		{GPU{Model: "Mystery GPU", MemoryMiB: 8192}, nil, 512, defaultSlots},                  // unknown model
		{GPU{Model: "Mystery GPU", MemoryMiB: 8192}, map[string]int{"default": 5}, 512, 5},
		{GPU{Model: "Tesla T4", MemoryMiB: 2048}, nil, 512, 4}, // 6 × 512 > 2048: memory lowers it
		{GPU{Model: "Tesla T4", MemoryMiB: 256}, nil, 512, 1},  // always one
		{GPU{Model: "Tesla T4", MemoryMiB: 15360}, nil, 0, 6},  // no memory check
	} {
		got, why := slotsFor(tc.gpu, tc.configured, tc.slotMiB)
		if got != tc.want {
			t.Errorf("slotsFor(%s, %d MiB, %v, %d) = %d (%s), want %d", tc.gpu.Model, tc.gpu.MemoryMiB, tc.configured, tc.slotMiB, got, why, tc.want)
		}
	}
}

func TestModelTableMatchesWholeNames(t *testing.T) {
	for model, want := range map[string]int{ // NVENC engines; -1: not in the table
		"Tesla T4": 1, "NVIDIA L4": 2, "NVIDIA L40S": 3, "NVIDIA L40": 3, "NVIDIA A10": 1, "NVIDIA A100-SXM4-80GB": 0,
		"NVIDIA A100 80GB PCIe": 0, "NVIDIA H100 80GB HBM3": 0, "NVIDIA H200": 0, "NVIDIA RTX A1000": -1, "NVIDIA RTX A3000": -1,
		"NVIDIA GeForce RTX 4090": 1, "NVIDIA GeForce GT 1030": 0, "NVIDIA GeForce MX450": 0, "NVIDIA RTX A4000": 1,
	} {
		f, known := factsFor(model)
		got := f.engines
		if !known {
			got = -1
		}
		if got != want {
			t.Errorf("factsFor(%q) engines %d (known %v), want %d", model, f.engines, known, want)
		}
	}
}

func TestUnhealthyGPUHasNoHealthySlot(t *testing.T) {
	dir := t.TempDir()
	writeFake(t, dir, "a.json", `{"id":"GPU-a","model":"RTX A4000","memory_mib":16376,"nvenc_h264":true}`)
	writeFake(t, dir, "b.json", `{"id":"GPU-b","model":"RTX A4000","memory_mib":16376,"nvenc_h264":true,"healthy":false,"health_desc":"XID 79"}`)
	_, fp := firstFingerprint(t, &Config{FakeDir: dir, FingerprintPeriod: "1s", Slots: map[string]int{"RTX A4000": 2}})
	healthy := map[string]bool{}
	for _, d := range fp.Devices[0].Devices {
		healthy[d.ID] = d.Healthy
		if !d.Healthy && d.HealthDesc != "XID 79" {
			t.Errorf("%s: health %q, want the reason", d.ID, d.HealthDesc)
		}
	}
	want := map[string]bool{"GPU-a/slot-0": true, "GPU-a/slot-1": true, "GPU-b/slot-0": false, "GPU-b/slot-1": false}
	if fmt.Sprint(healthy) != fmt.Sprint(want) {
		t.Fatalf("health %v, want %v", healthy, want)
	}
}

func TestFakeIDWithSlashRefused(t *testing.T) {
	dir := t.TempDir()
	writeFake(t, dir, "a.json", `{"id":"GPU-a/slot-0","model":"RTX A4000","nvenc_h264":true}`)
	if _, err := (dirSource{dir: dir}).GPUs(); err == nil {
		t.Fatal("accepted a GPU id that looks like a slot")
	}
}

func TestNoDriverReportsNoDevices(t *testing.T) {
	if _, err := os.Stat("/dev/nvidiactl"); err == nil {
		t.Skip("this machine has an NVIDIA driver")
	}
	_, fp := firstFingerprint(t, nil)
	if fp.Error != nil || len(fp.Devices) != 0 {
		t.Fatalf("without a driver: %+v, want no devices and no error", fp)
	}
}

func TestBadConfig(t *testing.T) {
	for _, c := range []Config{
		{FingerprintPeriod: "soon"},
		{Slots: map[string]int{"Tesla T4": 0}},
		{Slots: map[string]int{"default": 1000}},
		{SlotMemoryMiB: -1},
	} {
		p := NewPlugin(log.NewNullLogger())
		var cfg []byte
		_ = base.MsgPackEncode(&cfg, c)
		if err := p.SetConfig(&base.Config{PluginConfig: cfg}); err == nil {
			t.Errorf("accepted %+v", c)
		}
	}
}
