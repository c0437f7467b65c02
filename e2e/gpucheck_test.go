//go:build gpucheck

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/metal-stream/metal/internal/localcluster"
	"github.com/metal-stream/metal/scheduler"
)

// TestRealGPU runs only on a machine with an NVIDIA GPU, from
// tools/gpu-check.sh (build tag gpucheck): Metal's device plugin through a
// real Nomad against the real driver. It prints what Nomad fingerprints,
// checks that GPUs without NVENC (H100, H200, A100) say so, and prints the
// encoder the streamer picks on this machine.
func TestRealGPU(t *testing.T) {
	pluginDir := os.Getenv("METAL_NVIDIA_PLUGIN_DIR")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c, err := localcluster.Start(ctx, localcluster.Options{
		PluginDir: pluginDir, MinDevices: 1,
		NomadHCL: "plugin \"metal-nvidia\" {\n  config {\n    fingerprint_period = \"5s\"\n  }\n}\n",
	})
	if err != nil {
		t.Fatalf("nomad with the device plugin (no GPU fingerprinted?): %v", err)
	}
	defer c.Stop(context.Background())
	nodes, _, err := c.Nomad.Nodes().List(nil)
	if err != nil || len(nodes) == 0 {
		t.Fatal(err)
	}
	node, _, err := c.Nomad.Nodes().Info(nodes[0].ID, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range node.NodeResources.Devices {
		attrs := []string{}
		for k, v := range d.Attributes {
			attrs = append(attrs, k+"="+v.String())
		}
		fmt.Printf("GPU CHECK device %s/%s/%s x%d: %s\n", d.Vendor, d.Type, d.Name, len(d.Instances), strings.Join(attrs, " "))
		nvenc := d.Attributes["nvenc_h264"]
		for _, noEncoder := range []string{"H100", "H200", "A100"} {
			if strings.Contains(d.Name, noEncoder) && nvenc != nil && nvenc.BoolVal != nil && *nvenc.BoolVal {
				t.Errorf("%s reported with NVENC; it has none", d.Name)
			}
		}
	}
	fmt.Printf("GPU CHECK encoder slots Nomad may place streams on: %d\n", scheduler.EncoderGPUs(node.NodeResources.Devices))

	bin := os.Getenv("METAL_BIN")
	if bin == "" {
		bin = metalBinary(t)
	}
	port := freePort(t)
	cmd := exec.Command(bin, "streamer", "-listen", fmt.Sprintf("127.0.0.1:%d", port), "-ice-port", fmt.Sprint(freePort(t)),
		"-loopback", "-audio=false", "-demo")
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/healthz", port))
		if err == nil {
			var h struct{ Status, Encoder string }
			_ = json.NewDecoder(resp.Body).Decode(&h)
			resp.Body.Close()
			if h.Status == "ok" {
				fmt.Printf("GPU CHECK streamer encoder on this machine: %s\n", h.Encoder)
				return
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatal("streamer did not become healthy")
}
