package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	consul "github.com/hashicorp/consul/api"
	nomad "github.com/hashicorp/nomad/api"

	"github.com/metal-stream/metal/internal/localcluster"
	"github.com/metal-stream/metal/internal/localcluster/clustertest"
	"github.com/metal-stream/metal/jobs"
)

// TestStoppingTheGatewayJobLeavesNothing is `terraform destroy` with a
// player still streaming: the gateway job (jobs/gateway.nomad.hcl, run by
// Nomad as the module runs it, session jobs in a namespace of their own) is
// deregistered without purge, as the provider does, and the session
// namespace is then deleted the way terraform-provider-nomad v2.0.0 does it
// (retrying only "has non-terminal jobs", 10 times, 5 s apart). It must
// succeed: no session job and no session key is left behind. Before that, a
// gateway allocation stopped by Nomad (a restart, not a teardown) must leave
// the session running.
func TestStoppingTheGatewayJobLeavesNothing(t *testing.T) {
	c := clustertest.Cluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	const ns, sessionsNS = "metal-td", "metal-td-sessions"
	for _, n := range []string{ns, sessionsNS} {
		if _, err := c.Nomad.Namespaces().Register(&nomad.Namespace{Name: n}, nil); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := localcluster.PurgeJobs(ctx, c.Nomad); err != nil {
			t.Errorf("purge jobs: %v", err)
		}
		for _, n := range []string{sessionsNS, ns} {
			vars, _, _ := c.Nomad.Variables().List(&nomad.QueryOptions{Namespace: n})
			for _, v := range vars {
				_, _ = c.Nomad.Variables().Delete(v.Path, &nomad.WriteOptions{Namespace: n})
			}
			_, _ = c.Nomad.Namespaces().Delete(n, nil)
		}
		if _, err := c.Consul.KV().DeleteTree("metal/", nil); err != nil {
			t.Errorf("clean kv: %v", err)
		}
	})
	if _, _, err := c.Nomad.Variables().Create(&nomad.Variable{
		Namespace: ns, Path: "nomad/jobs/metal-gateway",
		Items: nomad.VariableItems{"key": e2eKey, "admin_token": e2eAdmin},
	}, &nomad.WriteOptions{Namespace: ns}); err != nil {
		t.Fatal(err)
	}
	hcl, err := jobs.Read("gateway.nomad.hcl")
	if err != nil {
		t.Fatal(err)
	}
	bin := metalBinary(t)
	if _, err := localcluster.RunJob(ctx, c.Nomad, hcl, map[string]any{
		"namespace": ns, "session_namespace": sessionsNS,
		"driver": "raw_exec", "metal_binary": bin, "streamer_driver": "raw_exec",
		"nomad_addr": c.NomadAddr, "consul_addr": c.ConsulAddr,
		"capacity": "2", "queue": 2,
		"streamer_args": []string{"-gpu=false", "-streamer-loopback", "-streamer-demo", "-resolution", "1280x720", "-fps", "30"},
	}); err != nil {
		t.Fatal(err)
	}
	g := &gatewayProc{url: gatewayURL(ctx, t, c, "")}

	code, v := createSession(t, g, "alice")
	if code != 201 && code != 200 {
		t.Fatalf("create session = %d", code)
	}
	waitSessionState(t, g, v.ID, "ready")
	sessionJob := "metal-session-" + v.ID
	inSessions := &nomad.QueryOptions{Namespace: sessionsNS}
	if _, _, err := c.Nomad.Jobs().Info(sessionJob, inSessions); err != nil {
		t.Fatalf("session job %s not in %s: %v", sessionJob, sessionsNS, err)
	}

	// A restart is not a teardown: Nomad stops the gateway's allocation
	// (SIGINT, as on a drain or an update) and places another; the session
	// keeps its job and its key.
	allocs, _, err := c.Nomad.Jobs().Allocations("metal-gateway", false, &nomad.QueryOptions{Namespace: ns})
	if err != nil || len(allocs) != 1 {
		t.Fatalf("gateway allocations: %d, %v", len(allocs), err)
	}
	if _, err := c.Nomad.Allocations().Stop(&nomad.Allocation{ID: allocs[0].ID, Namespace: ns}, nil); err != nil {
		t.Fatal(err)
	}
	g.url = gatewayURL(ctx, t, c, g.url)
	if got := waitSessionState(t, g, v.ID, "ready"); got.ID != v.ID {
		t.Fatalf("after a gateway restart: %+v", got)
	}
	if _, _, err := c.Nomad.Jobs().Info(sessionJob, inSessions); err != nil {
		t.Fatalf("a gateway restart removed session job %s: %v", sessionJob, err)
	}
	if _, _, err := c.Nomad.Variables().Read("nomad/jobs/"+sessionJob, inSessions); err != nil {
		t.Fatalf("a gateway restart removed the session's key: %v", err)
	}

	// terraform destroy: the gateway job is deregistered (no purge), then
	// the session namespace deleted.
	if _, _, err := c.Nomad.Jobs().Deregister("metal-gateway", false, &nomad.WriteOptions{Namespace: ns}); err != nil {
		t.Fatal(err)
	}
	for retries := 0; ; retries++ {
		_, err := c.Nomad.Namespaces().Delete(sessionsNS, nil)
		if err == nil {
			break
		}
		if retries < 10 && strings.Contains(err.Error(), "has non-terminal jobs") {
			time.Sleep(5 * time.Second)
			continue
		}
		left, _, _ := c.Nomad.Jobs().List(inSessions)
		keys, _, _ := c.Nomad.Variables().List(inSessions)
		t.Fatalf("delete namespace %s after the gateway job stopped (try %d): %v\njobs left: %d, keys left: %d", sessionsNS, retries+1, err, len(left), len(keys))
	}
}

// gatewayURL waits for a passing metal-gateway service in Consul other than
// the one at not, and returns its URL.
func gatewayURL(ctx context.Context, t *testing.T, c *localcluster.Cluster, not string) string {
	t.Helper()
	for {
		entries, err := localcluster.WaitService(ctx, c.Consul, "metal-gateway")
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			if u := serviceURL(e); u != not {
				return u
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("no metal-gateway service but %s", not)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func serviceURL(e *consul.ServiceEntry) string {
	addr := e.Service.Address
	if addr == "" {
		addr = e.Node.Address
	}
	return fmt.Sprintf("http://%s:%d", addr, e.Service.Port)
}
