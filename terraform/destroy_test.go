package terraform

import (
	"testing"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
)

// refs lists the resources a block refers to ("type.name"), depends_on
// included, through every nested block.
func refs(body *hclsyntax.Body) map[string]bool {
	out := map[string]bool{}
	var walk func(b *hclsyntax.Body)
	walk = func(b *hclsyntax.Body) {
		for _, a := range b.Attributes {
			for _, tr := range a.Expr.Variables() {
				if len(tr) < 2 {
					continue
				}
				root := tr.RootName()
				if attr, ok := tr[1].(hcl.TraverseAttr); ok && root != "var" && root != "local" && root != "path" {
					out[root+"."+attr.Name] = true
				}
			}
		}
		for _, nb := range b.Blocks {
			walk(nb.Body)
		}
	}
	walk(body)
	return out
}

// TestDestroyKeepsTheGatewayTokensUntilItsSessionsAreGone: on `terraform
// destroy` the gateway job goes first (it refers to the session
// namespace); each gateway then purges the session jobs and keys with its
// own Nomad token (-teardown-on-stop), while the provider retries deleting
// the namespace for as long as a job is left in it. So the namespace must be
// destroyed before the gateway's tokens and policy: it depends on the
// tokens, the tokens on the policy, and the policy names the namespace by
// variable, never by the resource (that would destroy the policy first).
// TestStoppingTheGatewayJobLeavesNothing (e2e) runs the teardown itself.
func TestDestroyKeepsTheGatewayTokensUntilItsSessionsAreGone(t *testing.T) {
	m := load(t, ".")
	graph := map[string]map[string]bool{}
	for typ, blocks := range m.resources {
		for _, b := range blocks {
			graph[typ+"."+b.Labels[1]] = refs(b.Body.(*hclsyntax.Body))
		}
	}
	var reaches func(from, to string, seen map[string]bool) bool
	reaches = func(from, to string, seen map[string]bool) bool {
		if from == to {
			return true
		}
		if seen[from] {
			return false
		}
		seen[from] = true
		for next := range graph[from] {
			if reaches(next, to, seen) {
				return true
			}
		}
		return false
	}
	for _, c := range []struct {
		from, to string
		want     bool
		why      string
	}{
		{"nomad_job.gateway", "nomad_namespace.sessions", true, "the gateway job must be stopped before its session namespace is deleted"},
		{"nomad_namespace.sessions", "nomad_acl_token.gateway", true, "the gateway's Nomad token must outlive the session namespace (the gateway purges with it)"},
		{"nomad_namespace.sessions", "consul_acl_token.gateway", true, "the gateway's Consul token must outlive the session namespace (it releases its lock with it)"},
		{"nomad_acl_token.gateway", "nomad_acl_policy.gateway", true, "the policy must outlive the token"},
		{"nomad_acl_policy.gateway", "nomad_namespace.sessions", false, "the policy must not depend on the namespace resource (it would be destroyed first)"},
	} {
		if _, ok := graph[c.from]; !ok {
			t.Fatalf("no resource %s", c.from)
		}
		if got := reaches(c.from, c.to, map[string]bool{}); got != c.want {
			t.Errorf("%s depends on %s: %v, want %v: %s", c.from, c.to, got, c.want, c.why)
		}
	}
}
