package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	consul "github.com/hashicorp/consul/api"
	nomad "github.com/hashicorp/nomad/api"

	"github.com/metal-stream/metal/internal/localcluster"
	"github.com/metal-stream/metal/scheduler"
)

var (
	a4000 = `{"id":"GPU-%s","model":"RTX A4000","memory_mib":16376,"nvenc_h264":true,"nvenc_hevc":true,"encoder_capacity":100}`
	h100  = `{"id":"GPU-%s","model":"NVIDIA H100 80GB HBM3","memory_mib":81559,"nvenc_h264":false}`
)

// gpuCluster starts a Nomad (and Consul) whose client runs Metal's device
// plugin with fake GPUs, each NVENC one offered as slots encoder slots,
// waiting until Nomad has fingerprinted them all.
func gpuCluster(t testing.TB, gpus map[string]string, slots int) (*localcluster.Cluster, string) {
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
	instances := 0
	for name, body := range gpus {
		if err := os.WriteFile(filepath.Join(dir, name+".json"), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		if strings.Contains(body, `"nvenc_h264":true`) {
			instances += slots
		} else {
			instances++
		}
	}
	c := startCluster(t, localcluster.Options{
		PluginDir:  pluginDir,
		MinDevices: instances,
		NomadHCL: fmt.Sprintf(`plugin "metal-nvidia" {
  config {
    fake_dir           = %q
    fingerprint_period = "1s"
    slots {
      default     = %d
      "RTX A4000" = %d
    }
  }
}
`, dir, slots, slots),
	})
	return c, dir
}

// startCluster starts agents of the test's own and stops them when it ends.
func startCluster(t testing.TB, o localcluster.Options) *localcluster.Cluster {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := localcluster.Start(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if err := c.Stop(ctx); err != nil {
			t.Errorf("stop cluster: %v", err)
		}
	})
	return c
}

// placement is where Nomad put a session: its allocation's device
// instances (encoder slots), and NVIDIA_VISIBLE_DEVICES as the streamer
// itself reports it.
type placement struct {
	slots     []string
	env       string
	encoder   string
	notChosen map[string]string
}

// placementOf reads a running session's slot from Nomad, the source of
// truth, and the GPU its streamer was handed from the streamer's /healthz
// at the address Consul's catalog has (not the health view, whose checks
// may flap on a loaded machine), retrying until it answers.
func placementOf(t *testing.T, c *localcluster.Cluster, session string) placement {
	t.Helper()
	var p placement
	allocs, _, err := c.Nomad.Jobs().Allocations("metal-session-"+session, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, stub := range allocs {
		if stub.ClientStatus != "running" {
			continue
		}
		a, _, err := c.Nomad.Allocations().Info(stub.ID, nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, task := range a.AllocatedResources.Tasks {
			for _, d := range task.Devices {
				p.slots = append(p.slots, d.DeviceIDs...)
			}
		}
	}
	client := &http.Client{Timeout: 3 * time.Second}
	deadline := time.Now().Add(60 * time.Second)
	for {
		svcs, _, err := c.Consul.Catalog().Service("metal-streamer", "session-"+session, nil)
		if err == nil && len(svcs) == 1 {
			resp, err := client.Get(fmt.Sprintf("http://%s:%d/healthz", svcs[0].ServiceAddress, svcs[0].ServicePort))
			if err == nil {
				var h struct {
					GPU, Encoder string
					NotChosen    map[string]string `json:"not_chosen"`
				}
				err = json.NewDecoder(resp.Body).Decode(&h)
				resp.Body.Close()
				if err == nil {
					p.env, p.encoder, p.notChosen = h.GPU, h.Encoder, h.NotChosen
					return p
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("streamer of %s never answered /healthz: %v (%d catalog entries)", session, err, len(svcs))
		}
		time.Sleep(200 * time.Millisecond)
	}
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

// TestGPUSlotsShareGPUs: two NVENC GPUs of two encoder slots each, and an
// H100 without NVENC. Four players are placed on four distinct slots
// across both NVENC GPUs (none on the H100), each streamer handed its own
// GPU; a fifth waits first in the queue, reading that it waits for a GPU,
// and is placed on the slot the first player frees. Then one GPU turns
// unhealthy: a slot freed on it takes no new session, one freed on the
// healthy GPU does.
//
// Two slots per GPU, not four: every session runs a real x264 streamer,
// and eight of them at 720p30 saturated this 2-core machine until one
// missed its health probes and was (rightly) failed over, which this test
// is not about.
func TestGPUSlotsShareGPUs(t *testing.T) {
	const slots = 2 // per NVENC GPU
	c, dir := gpuCluster(t, map[string]string{
		"a1": fmt.Sprintf(a4000, "a1"), "a2": fmt.Sprintf(a4000, "a2"), "h1": fmt.Sprintf(h100, "h1"),
	}, slots)
	// GPU slots, not CPU, are the limit here; the streamers show a still
	// desktop (no demo scene) so that five of them fit on two cores.
	// Fake GPUs have no NVENC: the streamers are told x264 (with -gpu a
	// streamer runs NVENC or exits).
	g := startGatewayOn(t, c, "auto", 5, "-streamer-cpu", "100", "-streamer-memory", "96", "-streamer-demo=false", "-streamer-encoder", "x264enc")

	var ids []string
	for i := range 2 * slots {
		code, v := createSession(t, g, fmt.Sprintf("p%d", i))
		if code != 201 {
			t.Fatalf("player %d of %d: %d %+v, want 201 (placed)", i+1, 2*slots, code, v)
		}
		ids = append(ids, v.ID)
	}
	where := map[string]placement{} // session: placement
	bySlot := map[string]string{}   // slot: session
	perGPU := map[string]int{}
	for _, id := range ids {
		waitSessionState(t, g, id, "ready")
		p := placementOf(t, c, id)
		if len(p.slots) != 1 {
			t.Fatalf("session %s holds slots %v, want one", id, p.slots)
		}
		slot := p.slots[0]
		gpu, _, _ := strings.Cut(slot, "/slot-")
		if gpu != "GPU-a1" && gpu != "GPU-a2" {
			t.Fatalf("session %s on %s, want an NVENC GPU's slot", id, slot)
		}
		if p.env != gpu {
			t.Fatalf("session %s on %s has NVIDIA_VISIBLE_DEVICES %q, want %q", id, slot, p.env, gpu)
		}
		if other, dup := bySlot[slot]; dup {
			t.Fatalf("slot %s given to %s and %s", slot, other, id)
		}
		bySlot[slot], where[id] = id, p
		perGPU[gpu]++
	}
	if perGPU["GPU-a1"] != slots || perGPU["GPU-a2"] != slots {
		t.Fatalf("sessions per GPU %v, want %d and %d", perGPU, slots, slots)
	}

	code, waiter := createSession(t, g, "p8")
	if code != 202 || waiter.State != "queued" || waiter.Position != 1 || waiter.Reason != "waiting for a GPU" {
		t.Fatalf("player %d: %d %+v, want 202 queued at 1, waiting for a GPU", 2*slots+1, code, waiter)
	}
	freed := where[ids[0]].slots[0]
	if code, b := g.api(t, "DELETE", "/v1/sessions/"+ids[0], "", nil); code != 204 {
		t.Fatalf("leave: %d %s", code, b)
	}
	waitSessionState(t, g, waiter.ID, "ready")
	if p := placementOf(t, c, waiter.ID); len(p.slots) != 1 || p.slots[0] != freed {
		t.Fatalf("player %d on %v, want the freed %s", 2*slots+1, p.slots, freed)
	}
	ids = append(ids[1:], waiter.ID)
	where[waiter.ID] = placement{slots: []string{freed}}

	// GPU-a2 turns unhealthy (the fake source's XID stand-in).
	bad := strings.Replace(fmt.Sprintf(a4000, "a2"), `"nvenc_h264":true`, `"nvenc_h264":true,"healthy":false,"health_desc":"XID 79"`, 1)
	if err := os.WriteFile(filepath.Join(dir, "a2.json"), []byte(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	waitNodeSlots(t, c, slots) // only GPU-a1's slots healthy
	var onBad, onGood string
	for _, id := range ids {
		if strings.HasPrefix(where[id].slots[0], "GPU-a2/") && onBad == "" {
			onBad = id
		}
		if strings.HasPrefix(where[id].slots[0], "GPU-a1/") && onGood == "" {
			onGood = id
		}
	}
	if code, b := g.api(t, "DELETE", "/v1/sessions/"+onBad, "", nil); code != 204 {
		t.Fatalf("leave: %d %s", code, b)
	}
	code, last := createSession(t, g, "p9")
	if code != 202 || last.Position != 1 {
		t.Fatalf("the last player with only an unhealthy slot free: %d %+v, want 202 queued at 1", code, last)
	}
	// Stays queued, and never even tried: the room count has no healthy
	// slot, so no job for it reaches Nomad (and none is placed on the
	// unhealthy GPU).
	for range 15 {
		if v := g.session(t, last.ID); v.State != "queued" {
			t.Fatalf("the last player %+v while only an unhealthy slot is free, want queued", v)
		}
		if _, _, err := c.Nomad.Jobs().Info("metal-session-"+last.ID, nil); err == nil {
			t.Fatalf("a job for the last player was registered while only an unhealthy slot is free")
		}
		time.Sleep(200 * time.Millisecond)
	}
	freed = where[onGood].slots[0]
	if code, b := g.api(t, "DELETE", "/v1/sessions/"+onGood, "", nil); code != 204 {
		t.Fatalf("leave: %d %s", code, b)
	}
	waitSessionState(t, g, last.ID, "ready")
	if p := placementOf(t, c, last.ID); len(p.slots) != 1 || p.slots[0] != freed {
		t.Fatalf("the last player on %v, want the healthy freed %s", p.slots, freed)
	}
}

// waitNodeSlots waits until the node reports exactly n healthy encoder slots.
func waitNodeSlots(t testing.TB, c *localcluster.Cluster, n int) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		nodes, _, err := c.Nomad.Nodes().List(nil)
		if err == nil && len(nodes) == 1 {
			node, _, err := c.Nomad.Nodes().Info(nodes[0].ID, nil)
			if err == nil && scheduler.EncoderGPUs(node.NodeResources.Devices) == n {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("node never reported %d healthy encoder slots", n)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestNoStreamOnNonNVENCNode: a node with only H100s has no encoder slot,
// so a player waits in the queue, reading why, and Nomad holds no job.
func TestNoStreamOnNonNVENCNode(t *testing.T) {
	c, _ := gpuCluster(t, map[string]string{"h1": fmt.Sprintf(h100, "h1"), "h2": fmt.Sprintf(h100, "h2")}, 4)
	g := startGatewayOn(t, c, "auto", 5)
	code, v := createSession(t, g, "p1")
	if code != 202 || v.State != "queued" || v.Position != 1 || v.Reason != "waiting for a GPU" {
		t.Fatalf("%d %+v, want 202 queued at 1, waiting for a GPU", code, v)
	}
	time.Sleep(2 * time.Second)
	if v := g.session(t, v.ID); v.State != "queued" {
		t.Fatalf("session %+v on a node without NVENC, want queued", v)
	}
	if jobs, _, err := c.Nomad.Jobs().List(nil); err != nil || len(jobs) != 0 {
		t.Fatalf("Nomad jobs %d (%v), want none", len(jobs), err)
	}
	if entries, _, _ := c.Consul.Health().Service("metal-streamer", "", false, &consul.QueryOptions{}); len(entries) != 0 {
		t.Fatalf("a streamer registered: %d", len(entries))
	}
}

// TestBlockedSessionWaitsWithPosition: a job in another namespace, which
// the gateway does not see (its token reads only its own namespace), takes
// most of the node's CPU, leaving room for one streamer where the gateway
// counts four. The gateway registers a second session and Nomad blocks it.
// The gateway must put that player back in the queue within 2 s, first in
// line and told it waits for a GPU, purge the blocked job (Nomad never
// holds a blocked job the gateway thinks placed), and place it as soon as
// the first player leaves.
func TestBlockedSessionWaitsWithPosition(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := startCluster(t, localcluster.Options{})
	nodes, _, err := c.Nomad.Nodes().List(nil)
	if err != nil || len(nodes) != 1 {
		t.Fatalf("nodes %v %v", nodes, err)
	}
	node, _, err := c.Nomad.Nodes().Info(nodes[0].ID, nil)
	if err != nil {
		t.Fatal(err)
	}
	// The gateway counts room for four streamers; the hog leaves room for
	// one and a half, whatever this machine's CPU.
	total := node.NodeResources.Cpu.CpuShares - int64(node.ReservedResources.Cpu.CpuShares)
	streamerCPU := total / 4
	if _, err := c.Nomad.Namespaces().Register(&nomad.Namespace{Name: "other"}, nil); err != nil {
		t.Fatal(err)
	}
	hog := fmt.Sprintf(`job "hog" {
  namespace = "other"
  type      = "batch"
  group "g" {
    task "t" {
      driver = "raw_exec"
      config {
        command = "/bin/sleep"
        args    = ["600"]
      }
      resources {
        cpu    = %d
        memory = 32
      }
    }
  }
}`, total-streamerCPU*3/2)
	g := startGatewayOn(t, c, "auto", 5, "-gpu=false", "-streamer-cpu", fmt.Sprint(streamerCPU), "-streamer-memory", "96")
	// The hog arrives after the gateway listed the allocations of every
	// namespace, in one its event stream (its own namespace) does not
	// follow: the room count is stale, as with anything it does not model.
	if _, err := localcluster.RunJob(ctx, c.Nomad, hog, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _, _ = c.Nomad.Jobs().Deregister("hog", true, &nomad.WriteOptions{Namespace: "other"})
	})
	code, first := createSession(t, g, "p1")
	if code != 201 {
		t.Fatalf("first player: %d %+v", code, first)
	}
	waitSessionState(t, g, first.ID, "ready")

	code, second := createSession(t, g, "p2")
	created := time.Now()
	if code != 201 {
		t.Fatalf("second player: %d %+v, want 201 (the room count says it fits)", code, second)
	}
	var v sessionView
	for {
		v = g.session(t, second.ID)
		if v.State == "queued" {
			break
		}
		if v.State != "placing" {
			t.Fatalf("second player %+v, want placing until Nomad refuses, then queued", v)
		}
		if time.Since(created) > 20*time.Second {
			t.Fatalf("second player still %+v after 20 s: Nomad's refusal never reached the player", v)
		}
		time.Sleep(50 * time.Millisecond)
	}
	took := time.Since(created)
	if v.Position != 1 || v.Reason != "waiting for a GPU" {
		t.Fatalf("refused player %+v, want queued at 1, waiting for a GPU", v)
	}
	if took > 2*time.Second {
		t.Fatalf("refused player shown waiting after %s, want within 2 s", took)
	}
	t.Logf("refused player shown waiting %s after admission", took.Round(time.Millisecond))
	deadline := time.Now().Add(15 * time.Second)
	for {
		job, _, err := c.Nomad.Jobs().Info("metal-session-"+second.ID, nil)
		if err != nil && strings.Contains(err.Error(), "404") {
			break
		}
		if err == nil && job.Status != nil && *job.Status == "dead" && job.Stop != nil && *job.Stop {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Nomad still holds the blocked job of a queued session: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// While it waits, retries (on backoff) must never show it placed for
	// long or take it out of the queue.
	if v := g.session(t, second.ID); v.State == "failed" || v.State == "ended" {
		t.Fatalf("refused player %+v", v)
	}
	if code, b := g.api(t, "DELETE", "/v1/sessions/"+first.ID, "", nil); code != 204 {
		t.Fatalf("leave: %d %s", code, b)
	}
	waitSessionState(t, g, second.ID, "ready")
}
