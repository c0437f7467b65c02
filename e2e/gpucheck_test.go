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

	"github.com/metal-stream/metal/internal/browsertest"
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
	t.Cleanup(func() { c.Stop(context.Background()) }) // after the gateway's cleanup, which purges its jobs
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
	slots := scheduler.EncoderGPUs(node.NodeResources.Devices)
	fmt.Printf("GPU CHECK encoder slots Nomad may place streams on: %d\n", slots)
	if slots == 0 {
		// An H100, H200 or A100 (or a GPU whose driver lacks the encoder
		// library): Metal never places a stream here.
		fmt.Printf("GPU CHECK no NVENC on this machine: no session is placed on its GPUs; a streamer here encodes with x264\n")
		printStreamerEncoder(t)
		return
	}

	// What a streamer picks here, and why not the others: the diagnosis if
	// the session below fails.
	printStreamerEncoder(t)

	// A session through the gateway, as a player starts one: Nomad places
	// it on an encoder slot, the streamer is told NVENC (nvenc: NVENC or
	// exit), and Chromium decodes it.
	g := startGatewayOn(t, c, "auto", 1)
	browser := browsertest.New(t)
	tab := open(t, browser, g.playerLink(t, "gpu-check"))
	waitFrames(t, tab, 30)
	id := sessionOf(t, tab)
	p := placementOf(t, c, id)
	if len(p.slots) != 1 || !strings.HasPrefix(p.slots[0], p.env) {
		t.Fatalf("session %s on slots %v with NVIDIA_VISIBLE_DEVICES %q: want one slot of that GPU", id, p.slots, p.env)
	}
	if p.encoder != "nvcudah264enc" && p.encoder != "nvh264enc" {
		t.Fatalf("the streamer on %s runs %q, want an NVENC encoder; not chosen: %v", p.slots[0], p.encoder, p.notChosen)
	}
	fmt.Printf("GPU CHECK session placed on %s, streamer encoder %s, Chromium decodes it\n", p.slots[0], p.encoder)
}

// printStreamerEncoder starts a streamer on this machine with the encoder
// chosen automatically and prints the one it picks, with why NVENC was not.
func printStreamerEncoder(t *testing.T) {
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
			var h struct {
				Status, Encoder string
				NotChosen       map[string]string `json:"not_chosen"`
			}
			_ = json.NewDecoder(resp.Body).Decode(&h)
			resp.Body.Close()
			if h.Status == "ok" {
				fmt.Printf("GPU CHECK streamer encoder on this machine: %s\n", h.Encoder)
				for enc, why := range h.NotChosen {
					fmt.Printf("GPU CHECK not chosen: %s: %s\n", enc, why)
				}
				return
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatal("streamer did not become healthy")
}
