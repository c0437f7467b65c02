package docker

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	nomad "github.com/hashicorp/nomad/api"

	"github.com/metal-stream/metal/internal/browsertest"
	"github.com/metal-stream/metal/internal/localcluster"
	"github.com/metal-stream/metal/internal/localcluster/clustertest"
	"github.com/metal-stream/metal/internal/netlab"
	"github.com/metal-stream/metal/internal/syncbuf"
	"github.com/metal-stream/metal/jobs"
)

// docker runs the docker CLI and fails the test with its output.
func docker(t testing.TB, args ...string) string {
	t.Helper()
	out, err := exec.Command("docker", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("docker %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// edgeNetwork creates a Docker network of the test's own (a /24 of
// 10.213.0.0/16 no other network holds) and returns its name and the
// subnet's first three octets; the host is .1 on it.
func edgeNetwork(t *testing.T) (name, prefix string) {
	t.Helper()
	name = fmt.Sprintf("metal-e2e-edges-%d", os.Getpid())
	var err error
	for try := 0; try < 20; try++ {
		prefix = fmt.Sprintf("10.213.%d", 1+rand.IntN(250))
		var out []byte
		out, err = exec.Command("docker", "network", "create", "--subnet", prefix+".0/24", "--gateway", prefix+".1", name).CombinedOutput()
		if err == nil {
			t.Cleanup(func() { _ = exec.Command("docker", "network", "rm", name).Run() })
			return name, prefix
		}
		err = fmt.Errorf("%w: %s", err, out)
	}
	t.Fatalf("docker network create: %v", err)
	return "", ""
}

// edgeHost is one edge: a container with an address of its own on the
// test's network, running a Consul client and a Nomad client (its own
// datacenter) from the host's agent binaries.
type edgeHost struct {
	name, dc, ip string
	// publicIP is the edge's address for players, at the end of a line
	// from the host's playerIP that adds delay (round trip).
	publicIP, playerIP string
	delay              time.Duration
}

// start runs the edge's container and its agents, joined to the servers at
// gateway (the host's address on the network).
func (e *edgeHost) start(t *testing.T, ctx context.Context, lab *netlab.Lab, network, gateway, nomadBin, consulBin string) *localcluster.Cluster {
	t.Helper()
	dir := t.TempDir()
	// Removed however the start ends (a failed run leaves a created one).
	t.Cleanup(func() { _ = exec.Command("docker", "rm", "-f", e.name).Run() })
	// The edge is the desktop image (metal, Xvfb, GStreamer), run as root
	// with CAP_SYS_ADMIN so that its Nomad client may mount each task's
	// secrets directory (--privileged: this machine's engine refuses it).
	// The agents' configs and data live in dir, mounted at the same path,
	// as are the agent binaries.
	args := []string{"run", "-d", "--name", e.name, "--hostname", e.name, "--network", network, "--ip", e.ip,
		"--user", "0", "--cap-add", "SYS_ADMIN", "--label", edgeLabel, "--entrypoint", "sleep",
		"-v", dir + ":" + dir, "-v", nomadBin + ":" + nomadBin + ":ro", "-v", consulBin + ":" + consulBin + ":ro"}
	if sec, _ := exec.Command("docker", "info", "--format", "{{.SecurityOptions}}").Output(); strings.Contains(string(sec), "apparmor") {
		// Docker's default AppArmor profile denies mount, CAP_SYS_ADMIN
		// or not.
		args = append(args, "--security-opt", "apparmor=unconfined")
	}
	docker(t, append(args, dockerImages[1], "infinity")...)
	// The player reaches the edge's public address over a line of its
	// own, delayed in both directions: a TUN pair between the host and the
	// container's network namespace (netlab; this kernel has no netem).
	pid := docker(t, "inspect", "-f", "{{.State.Pid}}", e.name)
	n, err := strconv.Atoi(pid)
	if err != nil {
		t.Fatalf("container %s pid %q", e.name, pid)
	}
	ns, err := lab.Adopt(e.dc, n)
	if err != nil {
		t.Fatal(err)
	}
	host := fmt.Sprintf("mtl%d%s", os.Getpid()%100000, strings.TrimPrefix(e.dc, "edge-"))
	if err := lab.DelayLink("", host, e.playerIP, ns, "pl", e.publicIP, e.delay/2); err != nil {
		t.Fatal(err)
	}
	c, err := localcluster.Start(ctx, localcluster.Options{
		Container: e.name, Dir: dir, BindIP: e.ip, NetworkInterface: "eth0", NodeName: e.name,
		Datacenter: e.dc, ConsulJoin: []string{gateway}, NomadRole: "client",
		NomadServers: []string{gateway + ":4647"}, NomadBin: nomadBin, ConsulBin: consulBin,
		ClientMeta: map[string]string{"public_ip": e.publicIP},
	})
	if err != nil {
		logs, _ := exec.Command("docker", "logs", e.name).CombinedOutput()
		t.Fatalf("agents in %s: %v\n%s", e.name, err, logs)
	}
	return c
}

// pageSession is what the player's page reads of a session (its owner
// cookie is the page's).
type pageSession struct {
	ID          string             `json:"id"`
	State       string             `json:"state"`
	Reason      string             `json:"reason"`
	Edge        string             `json:"edge"`
	RTT         map[string]float64 `json:"rtt"`
	Choice      string             `json:"choice"`
	Replacement string             `json:"replacement"`
}

func sessionFromPage(t *testing.T, tab context.Context, id string) pageSession {
	t.Helper()
	v, err := browsertest.Eval[pageSession](tab, `fetch("/v1/sessions/`+id+`").then(r => r.json())`)
	if err != nil {
		t.Fatalf("session %s from the page: %v", id, err)
	}
	return v
}

// TestEdgesAsContainersNearestAndFailover: two edges are real hosts, each
// a container with its own address on a Docker network, running a Consul
// client and a Nomad client (its own datacenter), a TURN relay and, once
// placed, the session's streamer; the servers and the gateway run on the
// host, which is the player's machine too. Edge 1 is 10 ms from the
// player, edge 2 40 ms (round trip, to their public addresses). The session lands on edge 1; docker kill of edge 1's
// container (agents, relay and streamer at once: a real node loss) tells
// the player within 5 s, and the replacement lands on edge 2.
func TestEdgesAsContainersNearestAndFailover(t *testing.T) {
	requireImages(t)
	if os.Geteuid() != 0 {
		// Network namespaces and TUN lines need root.
		if os.Getenv("CI") == "true" {
			t.Fatal("needs root (network namespaces, TUN)")
		}
		t.Skip("needs root (network namespaces, TUN)")
	}
	nomadBin, consulBin := clustertest.Binaries(t)
	network, prefix := edgeNetwork(t)
	gw := prefix + ".1"

	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	server, err := localcluster.Start(ctx, localcluster.Options{
		BindIP: gw, WellKnownPorts: true, NodeName: "srv", Datacenter: "srv", NomadRole: "server",
		NomadBin: nomadBin, ConsulBin: consulBin,
		// README (failure signals): a lost client noticed within seconds.
		HeartbeatTTL: time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = server.Stop(context.Background()) })

	lab := netlab.New()
	t.Cleanup(func() { _ = lab.Close() })
	// The edges' public addresses: a /24 of 198.18.0.0/15 (benchmarking,
	// RFC 2544) picked at random, as the network's subnet is.
	pub := fmt.Sprintf("198.18.%d", 100+rand.IntN(100))
	edges := []*edgeHost{
		{name: fmt.Sprintf("metal-e2e-edge-1-%d", os.Getpid()), dc: "edge-1", ip: prefix + ".11", publicIP: pub + ".2", playerIP: pub + ".1", delay: 10 * time.Millisecond},
		{name: fmt.Sprintf("metal-e2e-edge-2-%d", os.Getpid()), dc: "edge-2", ip: prefix + ".12", publicIP: pub + ".6", playerIP: pub + ".5", delay: 40 * time.Millisecond},
	}
	for _, e := range edges {
		e.start(t, ctx, lab, network, gw, nomadBin, consulBin)
	}

	// TURN on every edge (a system job), its secret in a Nomad variable.
	const secret = "docker-edges-turn-secret-0123456789"
	if _, _, err := server.Nomad.Variables().Create(&nomad.Variable{Path: "nomad/jobs/metal-turn", Items: nomad.VariableItems{"secret": secret}}, nil); err != nil {
		t.Fatal(err)
	}
	turnHCL, err := jobs.Read("turn.nomad.hcl")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := localcluster.RunJob(ctx, server.Nomad, turnHCL, map[string]any{"driver": "raw_exec", "metal_binary": "/usr/local/bin/metal"}); err != nil {
		t.Fatal(err)
	}
	if _, err := localcluster.WaitServiceN(ctx, server.Consul, "metal-turn", len(edges)); err != nil {
		t.Fatalf("%v\n%s", err, localcluster.TaskLogs(server.Nomad, "metal-turn", ""))
	}

	// The gateway on the host, as in TestNearestEdgeAndFailover; its default
	// edge is the farthest, so the choice must come from the RTTs.
	bin := filepath.Join(t.TempDir(), "metal")
	if out, err := exec.Command("go", "build", "-o", bin, "../../cmd/metal").CombinedOutput(); err != nil {
		t.Fatalf("build metal: %v\n%s", err, out)
	}
	url := "http://" + gw + ":8080"
	gwLog := &syncbuf.Buffer{}
	g := exec.Command(bin, "gateway", "-listen", gw+":8080", "-open", "-key", "docker-edges-key-0123456789abcdef",
		"-admin-token", "docker-edges-admin-0123456789", "-datacenter", "edge-2,edge-1",
		"-capacity", "1", "-queue", "3", "-failover", "auto", "-turn-secret", secret,
		"-streamer-driver", "raw_exec", "-streamer-binary", "/usr/local/bin/metal", "-gpu=false", "-streamer-demo",
		// Media over the edges' public lines too, not the Docker network.
		"-streamer-ice-interfaces", "pl",
		"-resolution", "1280x720", "-fps", "30")
	g.Env = append(os.Environ(), "NOMAD_ADDR="+server.NomadAddr, "CONSUL_HTTP_ADDR="+server.ConsulAddr)
	g.Stderr = gwLog
	if err := g.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = g.Process.Signal(os.Interrupt)
		_ = g.Wait()
		if t.Failed() {
			t.Logf("gateway log:\n%s", gwLog.String())
		}
	})
	for deadline := time.Now().Add(60 * time.Second); ; {
		resp, err := http.Get(url + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("gateway not ready: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}

	browser := browsertest.New(t)
	tab := browsertest.Tab(t, browser)
	if err := chromedp.Do(tab, chromedp.Navigate(url)); err != nil {
		t.Fatal(err)
	}
	if err := browsertest.WaitTrue(tab, `metal.stats && metal.stats.framesDecoded > 10`, 120*time.Second); err != nil {
		t.Fatal(err)
	}
	firstID, _ := browsertest.Eval[string](tab, `metal.session.id`)
	first := sessionFromPage(t, tab, firstID)
	if first.Edge != "edge-1" {
		t.Fatalf("session on %q (rtt %v, choice %q), want edge-1", first.Edge, first.RTT, first.Choice)
	}
	if !(first.RTT["edge-1"] < first.RTT["edge-2"]) || first.RTT["edge-1"] < 9 || first.RTT["edge-2"] < 39 {
		t.Fatalf("measured RTTs %v do not follow 10 < 40 ms", first.RTT)
	}
	t.Logf("placed on %s: %s; measured %v", first.Edge, first.Choice, first.RTT)

	// Edge 1's host dies: its container, and with it the Nomad client,
	// the Consul agent, the relay and the streamer.
	killed := time.Now()
	docker(t, "kill", edges[0].name)
	if err := browsertest.WaitTrue(tab, `(metal.failovers || 0) >= 1 || (metal.status || "").includes("failed")`, 5*time.Second); err != nil {
		t.Fatalf("player not told within 5 s of docker kill of edge 1: %v", err)
	}
	t.Logf("player told %v after docker kill", time.Since(killed).Round(time.Millisecond))
	if err := browsertest.WaitTrue(tab, `metal.session && metal.session.id !== "`+firstID+`" && metal.stats && metal.stats.framesDecoded > 10`, 120*time.Second); err != nil {
		t.Fatal(err)
	}
	secondID, _ := browsertest.Eval[string](tab, `metal.session.id`)
	if second := sessionFromPage(t, tab, secondID); second.Edge != "edge-2" {
		t.Fatalf("replacement on %q (%s), want edge-2", second.Edge, second.Choice)
	}
	if old := sessionFromPage(t, tab, firstID); old.State != "failed" || old.Replacement != secondID ||
		!(strings.Contains(old.Reason, "edge lost") || strings.Contains(old.Reason, "node lost")) {
		t.Fatalf("first session after the kill: %+v", old)
	}
}
