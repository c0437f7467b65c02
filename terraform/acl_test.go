package terraform

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	consul "github.com/hashicorp/consul/api"
	"github.com/hashicorp/hcl/v2"
	nomad "github.com/hashicorp/nomad/api"

	"github.com/metal-stream/metal/internal/localcluster"
	"github.com/metal-stream/metal/internal/localcluster/clustertest"
	"github.com/metal-stream/metal/jobs"
	"github.com/metal-stream/metal/scheduler"
)

// policyText evaluates a resource attribute of the module (with its
// defaults): the ACL rules as Terraform would send them.
func policyText(t *testing.T, m *module, typ, attr string) string {
	t.Helper()
	ctx := m.evalContext(t)
	for _, b := range m.resources[typ] {
		v, diags := attrs(t, b)[attr].Expr.Value(ctx)
		if diags.HasErrors() {
			t.Fatal(diags)
		}
		return v.AsString()
	}
	t.Fatalf("no %s in the module", typ)
	return ""
}

// sessionDrivers is the module's session namespace's enabled_task_drivers
// (with the variables' defaults).
func sessionDrivers(t *testing.T, m *module) []string {
	t.Helper()
	for _, b := range m.resources["nomad_namespace"] {
		if b.Labels[1] != "sessions" {
			continue
		}
		content, _, diags := b.Body.PartialContent(&hcl.BodySchema{Blocks: []hcl.BlockHeaderSchema{{Type: "capabilities"}}})
		if diags.HasErrors() || len(content.Blocks) != 1 {
			t.Fatalf("nomad_namespace.sessions: want one capabilities block: %v", diags)
		}
		v, diags := attrs(t, content.Blocks[0])["enabled_task_drivers"].Expr.Value(m.evalContext(t))
		if diags.HasErrors() {
			t.Fatal(diags)
		}
		var out []string
		for _, d := range v.AsValueSlice() {
			out = append(out, d.AsString())
		}
		return out
	}
	t.Fatal("no nomad_namespace.sessions in the module")
	return nil
}

func uuid(t *testing.T) string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

// TestGatewayTokensOnClustersWithACLs starts Nomad and Consul with ACLs on
// (default deny), loads the module's gateway policies into them and makes
// tokens from them, as manage_acls = true does. With those tokens:
//   - Nomad: a session job and its key can be registered, read, listed and
//     purged in the session namespace; the metal-turn job and the gateway's
//     variable in the module's namespace cannot be touched; no namespace
//     can be created.
//   - Consul: KV under metal/, the lock session and the lock check work;
//     other keys and registering a streamer service do not.
//   - A real gateway scheduler runs with both tokens: it leads and places a
//     session, whose job lands in the session namespace.
func TestGatewayTokensOnClustersWithACLs(t *testing.T) {
	nomadBin, consulBin := clustertest.Binaries(t)
	m := load(t, ".")
	vars := m.evalContext(t).Variables["var"].AsValueMap()
	metalNS, sessNS := vars["namespace"].AsString(), vars["session_namespace"].AsString()
	nomadRules := policyText(t, m, "nomad_acl_policy", "rules_hcl")
	consulRules := policyText(t, m, "consul_acl_policy", "rules")

	start, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c, err := localcluster.Start(start, localcluster.Options{ACL: true, ConsulACLToken: uuid(t), NomadBin: nomadBin, ConsulBin: consulBin})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Stop(context.Background())

	if _, err := c.Nomad.Namespaces().Register(&nomad.Namespace{Name: metalNS}, nil); err != nil {
		t.Fatal(err)
	}
	// The session namespace as the module declares it: its drivers too.
	if _, err := c.Nomad.Namespaces().Register(&nomad.Namespace{Name: sessNS,
		Capabilities: &nomad.NamespaceCapabilities{EnabledTaskDrivers: sessionDrivers(t, m)}}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Nomad.ACLPolicies().Upsert(&nomad.ACLPolicy{Name: "metal-gateway", Rules: nomadRules}, nil); err != nil {
		t.Fatalf("real Nomad refused the gateway policy:\n%s\n%v", nomadRules, err)
	}
	tok, _, err := c.Nomad.ACLTokens().Create(&nomad.ACLToken{Name: "gw", Type: "client", Policies: []string{"metal-gateway"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	// The TURN job, as the operator's apply registers it.
	turn := localcluster.SleepJob("metal-turn", metalNS)
	if _, _, err := c.Nomad.Jobs().Register(turn, nil); err != nil {
		t.Fatal(err)
	}
	gw, _ := nomad.NewClient(&nomad.Config{Address: c.NomadAddr, SecretID: tok.SecretID, Namespace: sessNS})

	t.Run("nomad", func(t *testing.T) {
		must := func(what string, err error) {
			t.Helper()
			if err != nil {
				t.Errorf("gateway token cannot %s: %v", what, err)
			}
		}
		refused := func(what string, err error) {
			t.Helper()
			if err == nil {
				t.Errorf("gateway token may %s", what)
			}
		}
		id := "metal-session-0123456789abcdef0123456789abcdef"
		_, _, err := gw.Variables().Create(&nomad.Variable{Path: "nomad/jobs/" + id, Items: nomad.VariableItems{"token_key": "k"}}, nil)
		must("write a session key", err)
		_, _, err = gw.Jobs().RegisterOpts(localcluster.SleepJob(id, sessNS), &nomad.RegisterOptions{EnforceIndex: true}, nil)
		must("register a session job", err)
		_, _, err = gw.Jobs().Info(id, nil)
		must("read a session job", err)
		_, _, err = gw.Jobs().PrefixList("metal-session-")
		must("list session jobs", err)
		_, _, err = gw.Variables().PrefixList("nomad/jobs/metal-session-", nil)
		must("list session keys", err)
		_, _, err = gw.Allocations().List(&nomad.QueryOptions{Namespace: "*"})
		must("list allocations (room counting)", err)
		_, _, err = gw.Nodes().List(nil)
		must("read nodes", err)
		_, _, err = gw.Jobs().Deregister(id, true, nil)
		must("purge a session job", err)
		_, err = gw.Variables().Delete("nomad/jobs/"+id, nil)
		must("delete a session key", err)

		_, _, err = gw.Jobs().Register(localcluster.SleepJob("metal-turn", metalNS), &nomad.WriteOptions{Namespace: metalNS})
		refused("rewrite the TURN job", err)
		_, _, err = gw.Jobs().Deregister("metal-turn", true, &nomad.WriteOptions{Namespace: metalNS})
		refused("purge the TURN job", err)
		_, _, err = gw.Variables().Create(&nomad.Variable{Path: "nomad/jobs/metal-gateway", Namespace: metalNS, Items: nomad.VariableItems{"key": "x"}}, &nomad.WriteOptions{Namespace: metalNS})
		refused("write the gateway's secrets", err)
		_, _, err = gw.Variables().Create(&nomad.Variable{Path: "nomad/jobs/other", Items: nomad.VariableItems{"k": "x"}}, nil)
		refused("write a key that is not a session's", err)
		_, err = gw.Namespaces().Register(&nomad.Namespace{Name: "evil"}, nil)
		refused("create namespaces", err)
		other := localcluster.SleepJob("metal-session-ffffffffffffffffffffffffffffffff", sessNS)
		other.TaskGroups[0].Tasks[0].Driver = "exec" // not the streamers' driver (raw_exec here, docker in production)
		_, _, err = gw.Jobs().Register(other, nil)
		refused("submit a session job with another task driver", err)
		if err != nil && !strings.Contains(err.Error(), "driver") {
			t.Errorf("a job with another driver was refused, but not for its driver: %v", err)
		}
	})

	ctoken := ""
	t.Run("consul", func(t *testing.T) {
		if _, _, err := c.Consul.ACL().PolicyCreate(&consul.ACLPolicy{Name: "metal-gateway", Rules: consulRules}, nil); err != nil {
			t.Fatalf("real Consul refused the gateway policy:\n%s\n%v", consulRules, err)
		}
		ct, _, err := c.Consul.ACL().TokenCreate(&consul.ACLToken{Policies: []*consul.ACLTokenPolicyLink{{Name: "metal-gateway"}}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		ctoken = ct.SecretID
		cc, _ := consul.NewClient(&consul.Config{Address: c.ConsulAddr, Token: ct.SecretID})
		if _, err := cc.KV().Put(&consul.KVPair{Key: "metal/sessions/x", Value: []byte("{}")}, nil); err != nil {
			t.Errorf("gateway token cannot write its KV: %v", err)
		}
		if _, err := cc.KV().Put(&consul.KVPair{Key: "vault/x", Value: []byte("x")}, nil); err == nil {
			t.Error("gateway token may write any key")
		}
		if _, _, err := cc.Health().Service("metal-streamer", "", false, nil); err != nil {
			t.Errorf("gateway token cannot read streamer health: %v", err)
		}
		if err := cc.Agent().ServiceRegister(&consul.AgentServiceRegistration{Name: "metal-streamer", ID: "fake"}); err == nil {
			t.Error("gateway token may register a streamer")
		}
	})

	// A real gateway scheduler with both tokens leads and places.
	hcl, _ := jobs.Read("streamer.nomad.hcl")
	sc := scheduler.DefaultConfig()
	sc.JobHCL, sc.MasterKey, sc.Namespace = hcl, []byte("acl-test-key-0123456789abcdef-0123"), sessNS
	sc.JobVars = map[string]any{"driver": "raw_exec", "gpu": false, "metal_binary": "/bin/true", "cpu": 100, "memory": 64}
	cc, _ := consul.NewClient(&consul.Config{Address: c.ConsulAddr, Token: ctoken})
	s, err := scheduler.New(sc, gw, cc, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	rctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = s.Run(rctx); close(done) }()
	defer func() { stop(); <-done }()
	deadline := time.Now().Add(30 * time.Second)
	for !s.Ready() || !s.Leading() {
		if time.Now().After(deadline) {
			t.Fatalf("the gateway with the module's tokens is not ready and leading (ready %v, leading %v)", s.Ready(), s.Leading())
		}
		time.Sleep(50 * time.Millisecond)
	}
	st, _, err := s.Enqueue(context.Background(), "acl-player", scheduler.Prefs{})
	if err != nil || st.State == scheduler.StateQueued || st.State.Terminal() {
		t.Fatalf("admission with the module's tokens: %+v %v", st, err)
	}
	if _, _, err := c.Nomad.Jobs().Info(s.JobID(st.ID), &nomad.QueryOptions{Namespace: sessNS}); err != nil {
		t.Fatalf("the session job is not in the session namespace: %v", err)
	}

	// terraform destroy: the gateway reads its own job (stopped) in the
	// module's namespace, then purges every session job and key with its
	// token; the session namespace can then be deleted.
	own := localcluster.SleepJob("metal-gateway", metalNS)
	if _, _, err := c.Nomad.Jobs().Register(own, nil); err != nil {
		t.Fatal(err)
	}
	if _, _, err := gw.Jobs().Info("metal-gateway", &nomad.QueryOptions{Namespace: metalNS}); err != nil {
		t.Errorf("gateway token cannot read its own job (the teardown reads whether it is stopped): %v", err)
	}
	tctx, tcancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer tcancel()
	if n, err := s.Teardown(tctx); err != nil || n < 1 {
		t.Fatalf("teardown with the gateway's token: removed %d, %v", n, err)
	}
	for retries := 0; ; retries++ {
		_, err := c.Nomad.Namespaces().Delete(sessNS, nil)
		if err == nil {
			break
		}
		if retries < 10 && strings.Contains(err.Error(), "has non-terminal jobs") {
			time.Sleep(5 * time.Second)
			continue
		}
		t.Fatalf("delete the session namespace after the teardown: %v", err)
	}
}
