package terraform

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/ext/tryfunc"
	"github.com/hashicorp/hcl/v2/hclparse"
	nomad "github.com/hashicorp/nomad/api"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/function"
	"github.com/zclconf/go-cty/cty/function/stdlib"
	ctyjson "github.com/zclconf/go-cty/cty/json"

	"github.com/metal-stream/metal/internal/localcluster/clustertest"
)

func TestMain(m *testing.M) {
	clustertest.Main(m, clustertest.Options{})
}

var rootSchema = &hcl.BodySchema{Blocks: []hcl.BlockHeaderSchema{
	{Type: "terraform"}, {Type: "provider", LabelNames: []string{"name"}},
	{Type: "variable", LabelNames: []string{"name"}}, {Type: "output", LabelNames: []string{"name"}},
	{Type: "locals"}, {Type: "module", LabelNames: []string{"name"}},
	{Type: "resource", LabelNames: []string{"type", "name"}}, {Type: "data", LabelNames: []string{"type", "name"}},
}}

// module is the parsed root module.
type module struct {
	dir       string
	variables map[string]*hcl.Block
	outputs   map[string]*hcl.Block
	locals    hcl.Attributes
	resources map[string][]*hcl.Block // by type
	data      map[string][]*hcl.Block // data sources, by type
}

func load(t *testing.T, dir string) *module {
	t.Helper()
	p := hclparse.NewParser()
	files, _ := filepath.Glob(filepath.Join(dir, "*.tf"))
	if len(files) == 0 {
		t.Fatalf("no .tf files in %s", dir)
	}
	m := &module{dir: dir, variables: map[string]*hcl.Block{}, outputs: map[string]*hcl.Block{},
		locals: hcl.Attributes{}, resources: map[string][]*hcl.Block{}, data: map[string][]*hcl.Block{}}
	for _, f := range files {
		file, diags := p.ParseHCLFile(f)
		if diags.HasErrors() {
			t.Fatalf("parse %s: %v", f, diags)
		}
		content, diags := file.Body.Content(rootSchema)
		if diags.HasErrors() {
			t.Fatalf("%s: %v", f, diags)
		}
		for _, b := range content.Blocks {
			switch b.Type {
			case "variable":
				m.variables[b.Labels[0]] = b
			case "output":
				m.outputs[b.Labels[0]] = b
			case "locals":
				attrs, diags := b.Body.JustAttributes()
				if diags.HasErrors() {
					t.Fatal(diags)
				}
				for k, v := range attrs {
					m.locals[k] = v
				}
			case "resource":
				m.resources[b.Labels[0]] = append(m.resources[b.Labels[0]], b)
			case "data":
				m.data[b.Labels[0]] = append(m.data[b.Labels[0]], b)
			}
		}
	}
	return m
}

func attrs(t *testing.T, b *hcl.Block) hcl.Attributes {
	t.Helper()
	a, _ := b.Body.JustAttributes()
	return a
}

// evalContext gives var.* (defaults), local.*, path.module, the namespace
// resource's name, and the functions the module uses.
func (m *module) evalContext(t *testing.T) *hcl.EvalContext {
	t.Helper()
	vars := map[string]cty.Value{}
	for name, b := range m.variables {
		a := attrs(t, b)
		if d, ok := a["default"]; ok {
			v, diags := d.Expr.Value(nil)
			if diags.HasErrors() {
				t.Fatalf("variable %s default: %v", name, diags)
			}
			vars[name] = v
		}
	}
	ctx := &hcl.EvalContext{
		Variables: map[string]cty.Value{
			"var":  cty.ObjectVal(vars),
			"path": cty.ObjectVal(map[string]cty.Value{"module": cty.StringVal(m.dir)}),
			// Before apply: no gateway registered in Consul yet.
			"data": cty.ObjectVal(map[string]cty.Value{
				"consul_service": cty.ObjectVal(map[string]cty.Value{"gateway": cty.EmptyTupleVal}),
			}),
		},
		Functions: map[string]function.Function{
			"jsonencode": stdlib.JSONEncodeFunc,
			"try":        tryfunc.TryFunc,
			"compact":    stdlib.CompactFunc,
			"merge":      stdlib.MergeFunc,
			"file": function.New(&function.Spec{
				Params: []function.Parameter{{Name: "path", Type: cty.String}},
				Type:   function.StaticReturnType(cty.String),
				Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
					b, err := os.ReadFile(args[0].AsString())
					if err != nil {
						return cty.NilVal, err
					}
					return cty.StringVal(string(b)), nil
				},
			}),
		},
	}
	locals := map[string]cty.Value{}
	for name, a := range m.locals {
		v, diags := a.Expr.Value(ctx)
		if diags.HasErrors() {
			t.Fatalf("local %s: %v", name, diags)
		}
		locals[name] = v
	}
	ctx.Variables["local"] = cty.ObjectVal(locals)
	ctx.Variables["nomad_namespace"] = cty.ObjectVal(map[string]cty.Value{
		"metal":    cty.ObjectVal(map[string]cty.Value{"name": vars["namespace"]}),
		"sessions": cty.ObjectVal(map[string]cty.Value{"name": vars["session_namespace"]}),
	})
	return ctx
}

func TestEveryVariableAndOutputIsDescribed(t *testing.T) {
	for _, dir := range []string{".", "examples/existing-cluster", "examples/gpu-fleet"} {
		m := load(t, dir)
		for name, b := range m.variables {
			a := attrs(t, b)
			if _, ok := a["description"]; !ok {
				t.Errorf("%s: variable %s has no description", dir, name)
			}
			if _, ok := a["type"]; !ok {
				t.Errorf("%s: variable %s has no type", dir, name)
			}
		}
		for name, b := range m.outputs {
			if _, ok := attrs(t, b)["description"]; !ok {
				t.Errorf("%s: output %s has no description", dir, name)
			}
		}
	}
}

// TestJobspecsParseOnRealNomad renders every nomad_job's jobspec with the
// HCL2 variables the module passes (defaults, as `make dev`'s agents get
// them) and has the real Nomad parse it, exactly as the provider submits it.
func TestJobspecsParseOnRealNomad(t *testing.T) {
	c := clustertest.Cluster(t)
	m := load(t, ".")
	ctx := m.evalContext(t)
	jobs := m.resources["nomad_job"]
	if len(jobs) < 2 {
		t.Fatalf("want nomad_job resources for the gateway and TURN, got %d", len(jobs))
	}
	seen := map[string]bool{}
	for _, b := range jobs {
		name := b.Labels[1]
		t.Run(name, func(t *testing.T) {
			body, _, diags := b.Body.PartialContent(&hcl.BodySchema{
				Attributes: []hcl.AttributeSchema{{Name: "jobspec", Required: true}},
				Blocks:     []hcl.BlockHeaderSchema{{Type: "hcl2"}},
			})
			if diags.HasErrors() {
				t.Fatal(diags)
			}
			spec, diags := body.Attributes["jobspec"].Expr.Value(ctx)
			if diags.HasErrors() {
				t.Fatalf("jobspec (does the file exist?): %v", diags)
			}
			vars := map[string]string{}
			for _, hb := range body.Blocks {
				a := attrs(t, hb)
				v, diags := a["vars"].Expr.Value(ctx)
				if diags.HasErrors() {
					t.Fatalf("hcl2 vars: %v", diags)
				}
				for k, val := range v.AsValueMap() {
					vars[k] = asVarString(t, val)
				}
			}
			varfile := varFile(t, spec.AsString(), vars)
			job, err := c.Nomad.Jobs().ParseHCLOpts(&nomad.JobsParseRequest{JobHCL: spec.AsString(), Variables: varfile, Canonicalize: true})
			if err != nil {
				t.Fatalf("real Nomad refused %s with the module's variables:\n%s\n%v", name, varfile, err)
			}
			seen[*job.ID] = true
			if *job.Namespace != "metal" {
				t.Errorf("job %s in namespace %s, want the module's", *job.ID, *job.Namespace)
			}
		})
	}
	for _, want := range []string{"metal-gateway", "metal-turn"} {
		if !seen[want] {
			t.Errorf("no nomad_job deploys %s", want)
		}
	}
	// The streamer job the gateway registers per session, with the values
	// the module hands the gateway.
	spec, err := os.ReadFile("../jobs/streamer.nomad.hcl")
	if err != nil {
		t.Fatal(err)
	}
	v := ctx.Variables["var"].AsValueMap()
	varfile := varFile(t, string(spec), map[string]string{
		"session_id": "0123456789abcdef0123456789abcdef", "datacenter": v["stream_datacenter"].AsString(),
		"driver": v["driver"].AsString(), "gpu": fmt.Sprint(v["gpu"].True()),
	})
	if _, err := c.Nomad.Jobs().ParseHCLOpts(&nomad.JobsParseRequest{JobHCL: string(spec), Variables: varfile}); err != nil {
		t.Fatalf("streamer job with the module's settings: %v", err)
	}
}

// asVarString is how the provider passes an hcl2 var: as a string, which
// Nomad reads like `-var k=v`.
func asVarString(t *testing.T, v cty.Value) string {
	t.Helper()
	switch {
	case v.Type() == cty.String:
		return v.AsString()
	case v.Type() == cty.Bool:
		return fmt.Sprint(v.True())
	case v.Type() == cty.Number:
		return v.AsBigFloat().Text('f', -1)
	}
	b, err := ctyjson.Marshal(v, v.Type())
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// varFile renders `-var k=v` values as a variables file: string-typed
// variables quoted, others as HCL literals, as the Nomad CLI does.
func varFile(t *testing.T, spec string, vars map[string]string) string {
	t.Helper()
	f, diags := hclparse.NewParser().ParseHCL([]byte(spec), "job.hcl")
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	content, _, _ := f.Body.PartialContent(&hcl.BodySchema{Blocks: []hcl.BlockHeaderSchema{{Type: "variable", LabelNames: []string{"name"}}}})
	types := map[string]string{}
	for _, b := range content.Blocks {
		a := attrs(t, b)
		if ty, ok := a["type"]; ok {
			types[b.Labels[0]] = strings.TrimSpace(string(ty.Expr.Range().SliceBytes([]byte(spec))))
		}
	}
	keys := make([]string, 0, len(vars))
	for k := range vars {
		if _, ok := types[k]; !ok {
			t.Errorf("the module passes %q, which the jobspec does not declare", k)
		}
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		if types[k] == "string" {
			q, _ := json.Marshal(vars[k])
			fmt.Fprintf(&b, "%s = %s\n", k, q)
		} else {
			fmt.Fprintf(&b, "%s = %s\n", k, vars[k])
		}
	}
	return b.String()
}
