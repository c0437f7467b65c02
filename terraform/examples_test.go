package terraform

import (
	"path/filepath"
	"testing"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/ext/tryfunc"
	"github.com/hashicorp/hcl/v2/ext/typeexpr"
	"github.com/hashicorp/hcl/v2/hclparse"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"
	"github.com/zclconf/go-cty/cty/function"
	"github.com/zclconf/go-cty/cty/function/stdlib"
)

// validationFunctions are the Terraform functions the variables'
// validation conditions use.
var validationFunctions = map[string]function.Function{
	"can":      tryfunc.CanFunc,
	"regex":    stdlib.RegexFunc,
	"floor":    stdlib.FloorFunc,
	"contains": stdlib.ContainsFunc,
}

// validate checks value against a module variable's type and validation
// blocks, as `tofu plan` would; it returns what the checks said.
func validate(t *testing.T, b *hcl.Block, value cty.Value) []string {
	t.Helper()
	content, _, diags := b.Body.PartialContent(&hcl.BodySchema{
		Attributes: []hcl.AttributeSchema{{Name: "type"}},
		Blocks:     []hcl.BlockHeaderSchema{{Type: "validation"}},
	})
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	var problems []string
	if ta, ok := content.Attributes["type"]; ok {
		ty, diags := typeexpr.TypeConstraint(ta.Expr)
		if diags.HasErrors() {
			t.Fatal(diags)
		}
		v, err := convert.Convert(value, ty)
		if err != nil {
			return []string{"type: " + err.Error()}
		}
		value = v
	}
	ctx := &hcl.EvalContext{
		Variables: map[string]cty.Value{"var": cty.ObjectVal(map[string]cty.Value{b.Labels[0]: value})},
		Functions: validationFunctions,
	}
	for _, vb := range content.Blocks {
		a := attrs(t, vb)
		ok, diags := a["condition"].Expr.Value(ctx)
		if diags.HasErrors() {
			problems = append(problems, diags.Error())
			continue
		}
		if ok.IsKnown() && ok.False() {
			msg, _ := a["error_message"].Expr.Value(nil)
			problems = append(problems, msg.AsString())
		}
	}
	return problems
}

// TestExamplesPassValidValues evaluates each example's module arguments
// (with the example's own defaults; unset ones unknown, as a plan sees
// them) against the module's variables: every argument exists, has the
// variable's type and passes its validation.
func TestExamplesPassValidValues(t *testing.T) {
	root := load(t, ".")
	for _, dir := range []string{"examples/existing-cluster", "examples/gpu-fleet"} {
		t.Run(filepath.Base(dir), func(t *testing.T) {
			ex := load(t, dir)
			vars := map[string]cty.Value{}
			for name, b := range ex.variables {
				a := attrs(t, b)
				if d, ok := a["default"]; ok {
					v, _ := d.Expr.Value(nil)
					vars[name] = v
				} else {
					vars[name] = cty.UnknownVal(cty.String)
				}
			}
			ctx := &hcl.EvalContext{Variables: map[string]cty.Value{"var": cty.ObjectVal(vars)}}
			f, diags := hclparse.NewParser().ParseHCLFile(filepath.Join(dir, "main.tf"))
			if diags.HasErrors() {
				t.Fatal(diags)
			}
			content, _ := f.Body.Content(rootSchema)
			n := 0
			for _, mb := range content.Blocks {
				if mb.Type != "module" {
					continue
				}
				args, _ := mb.Body.JustAttributes()
				for name, a := range args {
					if name == "source" {
						continue
					}
					vb, ok := root.variables[name]
					if !ok {
						t.Errorf("%s passes %s, which the module does not declare", dir, name)
						continue
					}
					v, diags := a.Expr.Value(ctx)
					if diags.HasErrors() {
						t.Errorf("%s: %s: %v", dir, name, diags)
						continue
					}
					for _, p := range validate(t, vb, v) {
						t.Errorf("%s: %s = %#v: %s", dir, name, v, p)
					}
					n++
				}
			}
			if n == 0 {
				t.Fatalf("%s passes nothing to the module", dir)
			}
		})
	}
}

// TestVariablesRefuseBadValues: the module's validations catch what an
// operator could get wrong, and let the documented values through.
func TestVariablesRefuseBadValues(t *testing.T) {
	root := load(t, ".")
	cases := []struct {
		name string
		v    cty.Value
		ok   bool
	}{
		{"capacity", cty.StringVal("auto"), true},
		{"capacity", cty.StringVal("4"), true},
		{"capacity", cty.StringVal("0"), false},
		{"capacity", cty.StringVal("lots"), false},
		{"queue", cty.NumberIntVal(10), true},
		{"queue", cty.NumberIntVal(-1), false},
		{"queue", cty.NumberFloatVal(2.5), false},
		{"gateway_port", cty.NumberIntVal(0), true},
		{"gateway_port", cty.NumberIntVal(70000), false},
		{"turn_port", cty.NumberIntVal(3478), true},
		{"turn_port", cty.NumberIntVal(0), false},
		{"session_namespace", cty.StringVal("metal-sessions"), true},
		{"session_namespace", cty.StringVal("bad ns"), false},
		{"driver", cty.StringVal("exec"), false},
		{"turn_tls_port", cty.NumberIntVal(5349), true},
		{"turn_tls_port", cty.NumberIntVal(70000), false},
		{"turn_allow", cty.StringVal(""), true},
		{"turn_allow", cty.StringVal("10.1.0.0/16, 203.0.113.0/24,fd12::/48"), true},
		{"turn_allow", cty.StringVal("10.1.0.0"), false},
		{"turn_allow", cty.StringVal("10.1.0.0/16;rm"), false},
		{"turn_relay_ip", cty.StringVal("203.0.113.7"), true},
		{"turn_relay_ip", cty.StringVal("203.0.113.700"), false},
		{"turn_relay_ip", cty.StringVal("edge.example.com"), false},
		{"turn_relay_ip", cty.StringVal("01.2.3.4"), false},
		{"turn_allow", cty.StringVal("0.0.0.0/0"), false},
		{"turn_allow", cty.StringVal("10.1.0.0/16,::/0"), false},
		{"turn_allow", cty.StringVal("100.64.0.0/10"), false},
		{"turn_allow", cty.StringVal("8.8.8.0/24, 100.100.0.0/16"), false},
		{"turn_deny_ports", cty.StringVal("4646,8500"), true},
		{"turn_deny_ports", cty.StringVal("4646;8500"), false},
	}
	for _, c := range cases {
		b, ok := root.variables[c.name]
		if !ok {
			t.Fatalf("no variable %s", c.name)
		}
		problems := validate(t, b, c.v)
		if c.ok && len(problems) > 0 {
			t.Errorf("%s = %#v refused: %v", c.name, c.v, problems)
		}
		if !c.ok && len(problems) == 0 {
			t.Errorf("%s = %#v accepted", c.name, c.v)
		}
	}
}

// TestTURNPreconditions: the TURN job's preconditions refuse a TLS port
// without a certificate and key, and one equal to the TURN port, as
// `tofu plan` would, and pass the defaults and a complete TLS setup.
func TestTURNPreconditions(t *testing.T) {
	root := load(t, ".")
	var job *hcl.Block
	for _, b := range root.resources["nomad_job"] {
		if b.Labels[1] == "turn" {
			job = b
		}
	}
	if job == nil {
		t.Fatal("no nomad_job.turn")
	}
	content, _, _ := job.Body.PartialContent(&hcl.BodySchema{Blocks: []hcl.BlockHeaderSchema{{Type: "lifecycle"}}})
	if len(content.Blocks) != 1 {
		t.Fatal("nomad_job.turn has no lifecycle block")
	}
	lc, _, _ := content.Blocks[0].Body.PartialContent(&hcl.BodySchema{Blocks: []hcl.BlockHeaderSchema{{Type: "precondition"}}})
	failing := func(over map[string]cty.Value) (n int) {
		ctx := root.evalContext(t)
		vars := ctx.Variables["var"].AsValueMap()
		for k, v := range over {
			vars[k] = v
		}
		ctx.Variables["var"] = cty.ObjectVal(vars)
		for _, p := range lc.Blocks {
			v, diags := attrs(t, p)["condition"].Expr.Value(ctx)
			if diags.HasErrors() {
				t.Fatal(diags)
			}
			if v.False() {
				n++
			}
		}
		return n
	}
	pem := cty.StringVal("-----BEGIN CERTIFICATE-----")
	for _, c := range []struct {
		name string
		over map[string]cty.Value
		fail int
	}{
		{"defaults", nil, 0},
		{"TLS with cert and key", map[string]cty.Value{"turn_tls_port": cty.NumberIntVal(5349), "turn_tls_cert": pem, "turn_tls_key": pem}, 0},
		{"TLS without a key", map[string]cty.Value{"turn_tls_port": cty.NumberIntVal(5349), "turn_tls_cert": pem}, 1},
		{"TLS on the TURN port", map[string]cty.Value{"turn_tls_port": cty.NumberIntVal(3478), "turn_tls_cert": pem, "turn_tls_key": pem}, 1},
	} {
		if got := failing(c.over); got != c.fail {
			t.Errorf("%s: %d preconditions fail, want %d", c.name, got, c.fail)
		}
	}
}
