package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	consul "github.com/hashicorp/consul/api"

	"github.com/metal-stream/metal/internal/browsertest"
	"github.com/metal-stream/metal/internal/localcluster"
)

var (
	a4000 = `{"id":"GPU-%s","model":"RTX A4000","memory_mib":16376,"nvenc_h264":true,"nvenc_hevc":true,"encoder_capacity":100}`
	h100  = `{"id":"GPU-%s","model":"NVIDIA H100 80GB HBM3","memory_mib":81559,"nvenc_h264":false}`
)

// gpuCluster starts a Nomad (and Consul) whose client runs Metal's device
// plugin with fake GPUs, waiting until Nomad has fingerprinted them all.
func gpuCluster(t *testing.T, gpus map[string]string) *localcluster.Cluster {
	t.Helper()
	pluginDir := os.Getenv("METAL_NVIDIA_PLUGIN_DIR")
	if pluginDir == "" {
		pluginDir, _ = filepath.Abs("../bin/plugins")
	}
	if _, err := os.Stat(filepath.Join(pluginDir, "metal-nvidia")); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("device plugin missing (make tools): %v", err)
		}
		t.Skipf("device plugin missing (make tools): %v", err)
	}
	dir := t.TempDir()
	for name, body := range gpus {
		if err := os.WriteFile(filepath.Join(dir, name+".json"), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := localcluster.Start(ctx, localcluster.Options{
		PluginDir:  pluginDir,
		MinDevices: len(gpus),
		NomadHCL: fmt.Sprintf(`plugin "metal-nvidia" {
  config {
    fake_dir           = %q
    fingerprint_period = "1s"
  }
}
`, dir),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if err := c.Stop(ctx); err != nil {
			t.Errorf("stop gpu cluster: %v", err)
		}
	})
	return c
}

// streamerGPUs reads NVIDIA_VISIBLE_DEVICES as each healthy streamer reports
// it, by session.
func streamerGPUs(t *testing.T, c *localcluster.Cluster) map[string]string {
	t.Helper()
	entries, _, err := c.Consul.Health().Service("metal-streamer", "", true, nil)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, e := range entries {
		resp, err := http.Get(fmt.Sprintf("http://%s:%d/healthz", e.Service.Address, e.Service.Port))
		if err != nil {
			continue
		}
		var h struct{ GPU string }
		_ = json.NewDecoder(resp.Body).Decode(&h)
		resp.Body.Close()
		out[e.Service.Meta["session"]] = h.GPU
	}
	return out
}

func waitSessionState(t *testing.T, g *gatewayProc, id, state string) sessionView {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for {
		v := g.session(t, id)
		if v.State == state {
			return v
		}
		if time.Now().After(deadline) || v.State == "failed" {
			t.Fatalf("session %s: %+v, want %s", id, v, state)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func createSession(t *testing.T, g *gatewayProc, player string) (int, sessionView) {
	t.Helper()
	code, b := g.api(t, "POST", "/v1/sessions", "", map[string]string{"link": linkToken(g.playerLink(t, player))})
	var v sessionView
	_ = json.Unmarshal(b, &v)
	return code, v
}

// TestGPUPlacementFollowsEncoders: two GPUs with NVENC and an H100 without.
// Capacity comes from the GPUs (2); two players land on the NVENC GPUs with
// NVIDIA_VISIBLE_DEVICES set, a third waits in the queue (the page shows its
// position) and gets the GPU the first one frees.
func TestGPUPlacementFollowsEncoders(t *testing.T) {
	c := gpuCluster(t, map[string]string{
		"a1": fmt.Sprintf(a4000, "a1"), "a2": fmt.Sprintf(a4000, "a2"), "h1": fmt.Sprintf(h100, "h1"),
	})
	g := startGatewayOn(t, c, "auto", 5)

	code1, s1 := createSession(t, g, "p1")
	code2, s2 := createSession(t, g, "p2")
	if code1 != 201 || code2 != 201 {
		t.Fatalf("first two players: %d %d, want 201 201", code1, code2)
	}
	waitSessionState(t, g, s1.ID, "ready")
	waitSessionState(t, g, s2.ID, "ready")
	gpus := streamerGPUs(t, c)
	if g1, g2 := gpus[s1.ID], gpus[s2.ID]; g1 == g2 || (g1 != "GPU-a1" && g1 != "GPU-a2") || (g2 != "GPU-a1" && g2 != "GPU-a2") {
		t.Fatalf("NVIDIA_VISIBLE_DEVICES %q and %q, want GPU-a1 and GPU-a2", g1, g2)
	}

	browser := browsertest.New(t)
	tab := browsertest.Tab(t, browser)
	if err := chromedp.Do(tab, chromedp.Navigate(g.playerLink(t, "p3"))); err != nil {
		t.Fatal(err)
	}
	if err := browsertest.WaitTrue(tab, `(metal.status || "").includes("number 1 in the queue")`, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	s3 := sessionOf(t, tab)
	freed := gpus[s1.ID]
	if code, b := g.api(t, "DELETE", "/v1/sessions/"+s1.ID, "", nil); code != 204 {
		t.Fatalf("leave: %d %s", code, b)
	}
	if err := browsertest.WaitTrue(tab, `metal.stats && metal.stats.framesDecoded > 10`, 90*time.Second); err != nil {
		t.Fatal(err)
	}
	if got := streamerGPUs(t, c)[s3]; got != freed {
		t.Fatalf("third player on %q, want the freed %q", got, freed)
	}
}

// TestNoStreamOnNonNVENCNode: a node with only H100s gets no stream. With
// capacity from the GPUs a player waits in the queue; with a capacity forced
// above it, Nomad itself refuses to place and the player reads why.
func TestNoStreamOnNonNVENCNode(t *testing.T) {
	c := gpuCluster(t, map[string]string{"h1": fmt.Sprintf(h100, "h1"), "h2": fmt.Sprintf(h100, "h2")})

	auto := startGatewayOn(t, c, "auto", 5)
	code, v := createSession(t, auto, "p1")
	if code != 202 || v.State != "queued" || v.Position != 1 {
		t.Fatalf("with auto capacity: %d %+v, want 202 queued at 1", code, v)
	}
	auto.api(t, "DELETE", "/v1/sessions/"+v.ID, "", nil)
	auto.stop(t)

	forced := startGatewayOn(t, c, "1", 5)
	code, v = createSession(t, forced, "p2")
	if code != 201 {
		t.Fatalf("forced capacity: %d %+v", code, v)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		v = forced.session(t, v.ID)
		if v.State == "placing" && v.Reason == "no GPU capacity" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("session %+v, want placing: no GPU capacity", v)
		}
		time.Sleep(200 * time.Millisecond)
	}
	allocs, _, err := c.Nomad.Jobs().Allocations("metal-session-"+v.ID, true, nil)
	if err != nil || len(allocs) != 0 {
		t.Fatalf("allocations on a node without NVENC: %d (%v)", len(allocs), err)
	}
	if entries, _, _ := c.Consul.Health().Service("metal-streamer", "", false, &consul.QueryOptions{}); len(entries) != 0 {
		t.Fatalf("a streamer registered: %d", len(entries))
	}
}
