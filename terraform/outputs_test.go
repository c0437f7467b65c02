package terraform

import (
	"strconv"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/ext/tryfunc"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/function"
	"github.com/zclconf/go-cty/cty/function/stdlib"
)

// TestGatewayURLIsWhereTheGatewayListens evaluates the gateway_url output
// as Terraform would after apply: public_url when set; otherwise the
// address and port of the gateway's metal-gateway service in Consul (read
// once the job's deployment is healthy: detach = false), so a dynamic
// gateway_port gives a URL that works, not instructions; and a clear
// message while no instance is registered.
func TestGatewayURLIsWhereTheGatewayListens(t *testing.T) {
	m := load(t, ".")
	out := attrs(t, m.outputs["gateway_url"])["value"]
	if out == nil {
		t.Fatal("no gateway_url output")
	}
	instance := func(addr, node string, port int) cty.Value {
		return cty.ObjectVal(map[string]cty.Value{
			// The provider (~> 2.20) gives the port as a string.
			"address": cty.StringVal(addr), "node_address": cty.StringVal(node), "port": cty.StringVal(strconv.Itoa(port)),
		})
	}
	eval := func(publicURL string, instances ...cty.Value) string {
		t.Helper()
		services := cty.ListValEmpty(instance("", "", 0).Type())
		if len(instances) > 0 {
			services = cty.ListVal(instances)
		}
		var data []cty.Value
		if publicURL == "" { // count = 0 with a public_url
			data = append(data, cty.ObjectVal(map[string]cty.Value{"service": services}))
		}
		ctx := &hcl.EvalContext{
			Variables: map[string]cty.Value{
				"var": cty.ObjectVal(map[string]cty.Value{"public_url": cty.StringVal(publicURL)}),
				"data": cty.ObjectVal(map[string]cty.Value{
					"consul_service": cty.ObjectVal(map[string]cty.Value{"gateway": cty.TupleVal(data)}),
				}),
			},
			Functions: map[string]function.Function{"try": tryfunc.TryFunc, "format": stdlib.FormatFunc},
		}
		inst, diags := m.locals["gateway_instance"].Expr.Value(ctx)
		if diags.HasErrors() {
			t.Fatalf("local.gateway_instance: %v", diags)
		}
		ctx.Variables["local"] = cty.ObjectVal(map[string]cty.Value{"gateway_instance": inst})
		v, diags := out.Expr.Value(ctx)
		if diags.HasErrors() {
			t.Fatalf("gateway_url: %v", diags)
		}
		return v.AsString()
	}
	for _, c := range []struct {
		name, got, want string
	}{
		{"public_url", eval("https://play.example.com"), "https://play.example.com"},
		{"dynamic port", eval("", instance("10.1.2.3", "10.1.2.1", 27812)), "http://10.1.2.3:27812"},
		{"service without its own address", eval("", instance("", "10.1.2.1", 8080)), "http://10.1.2.1:8080"},
	} {
		if c.got != c.want {
			t.Errorf("%s: gateway_url = %q, want %q", c.name, c.got, c.want)
		}
	}
	if got := eval(""); !strings.Contains(got, "consul catalog service") {
		t.Errorf("no instance yet: gateway_url = %q, want where to read it", got)
	}

	// The service is read after the job's deployment is healthy.
	job := m.resources["nomad_job"]
	var detach hcl.Expression
	for _, b := range job {
		if b.Labels[1] == "gateway" {
			if a, ok := b.Body.(*hclsyntax.Body).Attributes["detach"]; ok {
				detach = a.Expr
			}
		}
	}
	if detach == nil {
		t.Fatal("nomad_job.gateway: no detach = false (the provider would not wait for the gateway to run)")
	}
	if v, _ := detach.Value(nil); v.True() {
		t.Error("nomad_job.gateway: detach = true")
	}
	var ds *hcl.Block
	for _, b := range m.data["consul_service"] {
		if b.Labels[1] == "gateway" {
			ds = b
		}
	}
	if ds == nil || !refs(ds.Body.(*hclsyntax.Body))["nomad_job.gateway"] {
		t.Error("data.consul_service.gateway must depend on nomad_job.gateway (read after the gateway runs)")
	}
}
