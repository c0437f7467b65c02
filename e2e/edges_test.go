package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	nomad "github.com/hashicorp/nomad/api"

	"github.com/metal-stream/metal/internal/browsertest"
	"github.com/metal-stream/metal/internal/localcluster"
	"github.com/metal-stream/metal/internal/localcluster/clustertest"
	"github.com/metal-stream/metal/internal/netlab"
	"github.com/metal-stream/metal/jobs"
)

// edgeSite is one edge of the test topology.
type edgeSite struct {
	name    string // Nomad datacenter
	ns      string
	rtt     time.Duration // from the player
	cluster *localcluster.Cluster
}

// TestNearestEdgeAndFailover builds a gateway/server site and three edge
// sites in network namespaces, 10, 40 and 80 ms (round trip) from the
// player's namespace, where Chromium runs. Each edge has its own Consul agent
// and Nomad client (datacenter = edge name) and a TURN relay. The session must
// land on the 10 ms edge; when that edge dies, the player is told within 5 s
// and the replacement lands on the 40 ms edge. Three gateways run the fleet
// and the player talks to one that does not lead. Every packet stays in
// the test's own namespaces.
func TestNearestEdgeAndFailover(t *testing.T) {
	if os.Getenv("METAL_TEST_NETNS") != "1" {
		if os.Getenv("CI") == "true" {
			t.Fatal("needs the test's own network namespace (root)")
		}
		t.Skip("needs the test's own network namespace (root)")
	}
	nomadBin, consulBin := clustertest.Binaries(t)
	lab := netlab.New()
	t.Cleanup(func() {
		if err := lab.Close(); err != nil {
			t.Errorf("lab: %v", err)
		}
	})
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	srv, err := lab.Namespace("srv")
	must(err)
	must(lab.Veth("", "pl-srv", "198.19.0.1/30", srv, "srv-pl", "198.19.0.2/30"))
	must(lab.Addr(srv, "lo", "198.20.0.1/32"))
	must(lab.Route("", "198.20.0.1/32", "198.19.0.2"))
	must(lab.Forwarding(srv))

	edges := []*edgeSite{{name: "edge-1", rtt: 10 * time.Millisecond}, {name: "edge-2", rtt: 40 * time.Millisecond}, {name: "edge-3", rtt: 80 * time.Millisecond}}
	for i, e := range edges {
		k := i + 1
		e.ns, err = lab.Namespace(e.name)
		must(err)
		must(lab.Veth(srv, fmt.Sprintf("srv-e%d", k), fmt.Sprintf("198.19.%d.1/30", k), e.ns, "e-srv", fmt.Sprintf("198.19.%d.2/30", k)))
		must(lab.Route(e.ns, "198.20.0.1/32", fmt.Sprintf("198.19.%d.1", k)))
		must(lab.Route(e.ns, "198.19.0.0/16", fmt.Sprintf("198.19.%d.1", k)))
		must(lab.DelayLink("", fmt.Sprintf("pl-e%d", k), fmt.Sprintf("198.18.%d.1", k), e.ns, "e-pl", fmt.Sprintf("198.18.%d.2", k), e.rtt/2))
		must(lab.RouteDev("", fmt.Sprintf("198.19.%d.2/32", k), fmt.Sprintf("pl-e%d", k)))
	}

	// The server site: Consul server, Nomad server.
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	server, err := localcluster.Start(ctx, localcluster.Options{
		Netns: srv, BindIP: "198.20.0.1", NodeName: "srv", Datacenter: "srv", NomadRole: "server",
		NomadBin: nomadBin, ConsulBin: consulBin,
		// An operator who wants a lost client noticed within seconds sets
		// these (README: failure signals); Nomad's defaults take ~20 s.
		HeartbeatTTL: time.Second,
	})
	must(err)
	t.Cleanup(func() { _ = server.Stop(context.Background()) })
	// The edges: a Consul client and a Nomad client each.
	for i, e := range edges {
		k := i + 1
		e.cluster, err = localcluster.Start(ctx, localcluster.Options{
			Netns: e.ns, BindIP: fmt.Sprintf("198.19.%d.2", k), NetworkInterface: "e-srv", NodeName: e.name,
			Datacenter: e.name, ConsulJoin: []string{"198.20.0.1"}, NomadRole: "client",
			NomadServers: []string{"198.20.0.1:4647"}, NomadBin: nomadBin, ConsulBin: consulBin,
			ClientMeta: map[string]string{"public_ip": fmt.Sprintf("198.18.%d.2", k)},
		})
		must(err)
		c := e.cluster
		t.Cleanup(func() { _ = c.Stop(context.Background()) })
	}

	// TURN on every edge (system job), its secret in a Nomad variable.
	const secret = "edge-test-turn-secret-0123456789"
	_, _, err = server.Nomad.Variables().Create(&nomad.Variable{Path: "nomad/jobs/metal-turn", Items: nomad.VariableItems{"secret": secret}}, nil)
	must(err)
	turnHCL, err := jobs.Read("turn.nomad.hcl")
	must(err)
	_, err = localcluster.RunJob(ctx, server.Nomad, turnHCL, map[string]any{"driver": "raw_exec", "metal_binary": metalBinary(t)})
	must(err)
	waitPassing(t, server, "metal-turn", 3)

	// Three gateways, as a fleet runs them; the player talks to one that
	// does not lead, so every signal below crosses from the leader (which
	// acts on Nomad's and Consul's events) to the player's gateway through
	// the shared records.
	var gws []*gatewayProc
	for k := range 3 {
		listen := fmt.Sprintf("198.20.0.1:%d", 8080+k)
		gw := &gatewayProc{netns: srv, url: "http://" + listen}
		gw.args = []string{"gateway", "-listen", listen, "-instance", fmt.Sprintf("gw-%d", k), "-key", e2eKey, "-admin-token", e2eAdmin,
			"-datacenter", "edge-3,edge-2,edge-1", // default edge is the farthest: the choice must come from RTT
			"-capacity", "1", "-queue", "3", "-failover", "auto", "-turn-secret", secret,
			"-streamer-driver", "raw_exec", "-streamer-binary", metalBinary(t), "-gpu=false", "-streamer-demo",
			"-resolution", "1280x720", "-fps", "30", "-rate", "1000", "-burst", "1000"}
		gw.env = append(os.Environ(), "NOMAD_ADDR="+server.NomadAddr, "CONSUL_HTTP_ADDR="+server.ConsulAddr)
		gw.start(t)
		gws = append(gws, gw)
	}
	t.Cleanup(func() {
		for _, gw := range gws {
			gw.stop(t)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_ = localcluster.PurgeJobs(ctx, server.Nomad)
	})
	// Once the fleet has a leader, the player's gateway is one that does
	// not lead (checked again after the kills: it must not have taken
	// over, or the test would be the one-gateway case again).
	leaderOf(t, gws, 10*time.Second)
	var g *gatewayProc
	for _, gw := range gws {
		if l, ok := gw.leads(); ok && !l {
			g = gw
			break
		}
	}
	if g == nil {
		t.Fatal("no gateway answers as a follower")
	}
	logs := func() string {
		var b strings.Builder
		for _, gw := range gws {
			fmt.Fprintf(&b, "--- gateway %s:\n%s\n", gw.url, gw.stderr.String())
		}
		return b.String()
	}

	browser := browsertest.New(t)
	tab := browsertest.Tab(t, browser)
	must(chromedp.Do(tab, chromedp.Navigate(g.playerLink(t, "roamer"))))
	if err := browsertest.WaitTrue(tab, `metal.stats && metal.stats.framesDecoded > 10`, 120*time.Second); err != nil {
		t.Fatal(err)
	}
	first := g.session(t, sessionOf(t, tab))
	full := g.sessionFull(t, first.ID)
	if full.Edge != "edge-1" {
		t.Fatalf("session on %q (rtt %v, choice %q), want edge-1", full.Edge, full.RTT, full.Choice)
	}
	if !(full.RTT["edge-1"] < full.RTT["edge-2"] && full.RTT["edge-2"] < full.RTT["edge-3"]) || full.RTT["edge-1"] < 9 {
		t.Fatalf("measured RTTs %v do not follow 10 < 40 < 80 ms", full.RTT)
	}
	t.Logf("placed on %s: %s; measured %v", full.Edge, full.Choice, full.RTT)

	// The 10 ms edge dies: its Nomad client, Consul agent, relay and
	// streamer all at once.
	killed := time.Now()
	lab.Kill(edges[0].ns)
	if err := browsertest.WaitTrue(tab, `(metal.failovers || 0) >= 1 || (metal.status || "").includes("failed")`, 5*time.Second); err != nil {
		t.Fatalf("player not told within 5 s of the edge dying: %v", err)
	}
	t.Logf("player told after %v", time.Since(killed).Round(time.Millisecond))
	if err := browsertest.WaitTrue(tab, `metal.session && metal.session.id !== "`+first.ID+`" && metal.stats && metal.stats.framesDecoded > 10`, 120*time.Second); err != nil {
		t.Fatalf("%v\ngateway logs:\n%s", err, logs())
	}
	second := g.sessionFull(t, sessionOf(t, tab))
	if second.Edge != "edge-2" {
		t.Fatalf("replacement on %q (%s), want edge-2", second.Edge, second.Choice)
	}
	if old := g.sessionFull(t, first.ID); old.State != "failed" || old.Replacement != second.ID ||
		// Whichever signal comes first: three missed probes (edge lost) or
		// Nomad's node event (node lost, its heartbeat TTL is 1 s here).
		!(strings.Contains(old.Reason, "edge lost") || strings.Contains(old.Reason, ReasonNodeLost)) {
		t.Fatalf("first session after failover: %+v", old)
	}

	// Now edge-2's Nomad client alone dies: the streamer, the relay and
	// Consul go on, so neither probes nor health checks see anything; only
	// Nomad's node event does. The player is told within 5 s of the kill
	// and lands on edge-3.
	stopped := time.Now()
	must(edges[1].cluster.KillNomad())
	t.Cleanup(func() { lab.Kill(edges[1].ns) }) // its orphaned streamer
	if err := browsertest.WaitTrue(tab, `(metal.failovers || 0) >= 2`, 5*time.Second); err != nil {
		t.Fatalf("player not told within 5 s of edge-2's Nomad client dying: %v\ngateway logs:\n%s", err, logs())
	}
	t.Logf("player told %v after the client died", time.Since(stopped).Round(time.Millisecond))
	if err := browsertest.WaitTrue(tab, `metal.session && metal.session.id !== "`+second.ID+`" && metal.stats && metal.stats.framesDecoded > 10`, 120*time.Second); err != nil {
		t.Fatalf("%v\ngateway logs:\n%s", err, logs())
	}
	third := g.sessionFull(t, sessionOf(t, tab))
	if third.Edge != "edge-3" {
		t.Fatalf("second replacement on %q (%s), want edge-3", third.Edge, third.Choice)
	}
	if old := g.sessionFull(t, second.ID); old.State != "failed" || old.Replacement != third.ID || !strings.Contains(old.Reason, ReasonNodeLost) {
		t.Fatalf("second session after its client died: %+v", old)
	}
	if l, _ := g.leads(); l {
		t.Fatal("the player's gateway took the lead during the test: the signals never crossed gateways")
	}
}

// ReasonNodeLost is scheduler.ReasonNodeLost as the player reads it.
const ReasonNodeLost = "node lost"

type fullView struct {
	sessionView
	Edge        string             `json:"edge"`
	RTT         map[string]float64 `json:"rtt"`
	Choice      string             `json:"choice"`
	Replacement string             `json:"replacement"`
}

func (g *gatewayProc) sessionFull(t *testing.T, id string) fullView {
	t.Helper()
	_, b := g.api(t, "GET", "/v1/sessions/"+id, "", nil)
	var v fullView
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("session %s: %v %s", id, err, b)
	}
	return v
}

func waitPassing(t *testing.T, c *localcluster.Cluster, service string, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if _, err := localcluster.WaitServiceN(ctx, c.Consul, service, n); err != nil {
		t.Fatalf("%v\n%s", err, localcluster.TaskLogs(c.Nomad, service, ""))
	}
}
