package main

import (
	"context"
	"os"
	"path/filepath"
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
	writeFake(t, dir, "b.json", `{"id":"GPU-b","model":"RTX A4000","memory_mib":16376,"nvenc_h264":true,"nvenc_hevc":true,"encoder_capacity":100}`)
	writeFake(t, dir, "h.json", `{"id":"GPU-h","model":"NVIDIA H100 80GB HBM3","memory_mib":81559}`)
	p, fp := firstFingerprint(t, &Config{FakeDir: dir, FingerprintPeriod: "1s"})
	if fp.Error != nil || len(fp.Devices) != 2 {
		t.Fatalf("fingerprint %+v", fp)
	}
	a4000, h100 := fp.Devices[1], fp.Devices[0] // sorted by name
	if h100.Name != "NVIDIA-H100-80GB-HBM3" || len(h100.Devices) != 1 || *h100.Attributes["nvenc_h264"].Bool {
		t.Fatalf("H100 group %+v: must show no NVENC", h100)
	}
	if a4000.Vendor != "nvidia" || a4000.Type != "gpu" || len(a4000.Devices) != 2 || !*a4000.Attributes["nvenc_h264"].Bool ||
		*a4000.Attributes["memory"].Int != 16376 || a4000.Attributes["memory"].Unit != "MiB" {
		t.Fatalf("A4000 group %+v", a4000)
	}
	for _, g := range fp.Devices {
		if err := g.Validate(); err != nil {
			t.Fatal(err)
		}
	}
	res, err := p.Reserve([]string{"GPU-a", "GPU-b"})
	if err != nil || res.Envs["NVIDIA_VISIBLE_DEVICES"] != "GPU-a,GPU-b" {
		t.Fatalf("reserve = %+v, %v", res, err)
	}
	if _, err := p.Reserve([]string{"GPU-zzz"}); err == nil {
		t.Fatal("reserved an unknown GPU")
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
	p := NewPlugin(log.NewNullLogger())
	var cfg []byte
	_ = base.MsgPackEncode(&cfg, Config{FingerprintPeriod: "soon"})
	if err := p.SetConfig(&base.Config{PluginConfig: cfg}); err == nil {
		t.Fatal("accepted a bad fingerprint_period")
	}
}
