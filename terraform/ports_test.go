package terraform

import (
	"os"
	"path/filepath"
	"regexp"
	"testing"
)

// TestRelayPortRangeAgrees: every place that tells an operator which ports
// to reserve on Nomad clients and open in firewalls names the relay port
// range the TURN job uses by default (its min_port and max_port); a
// stale range firewalls most relays away.
func TestRelayPortRangeAgrees(t *testing.T) {
	job, err := os.ReadFile(filepath.Join("..", "jobs", "turn.nomad.hcl"))
	if err != nil {
		t.Fatal(err)
	}
	def := func(name string) string {
		m := regexp.MustCompile(`variable "` + name + `" \{[^}]*default\s*=\s*(\d+)`).FindSubmatch(job)
		if m == nil {
			t.Fatalf("jobs/turn.nomad.hcl: no default for %s", name)
		}
		return string(m[1])
	}
	want := def("min_port") + "-" + def("max_port")
	ranges := regexp.MustCompile(`\b(49\d{3})-(\d{5})\b`)
	for _, f := range []string{
		"../jobs/turn.nomad.hcl", "examples/gpu-fleet/main.tf", "examples/existing-cluster/main.tf",
		"../turn/config.go", "../internal/localcluster/nomad.go", "README.md", "../README.md",
	} {
		b, err := os.ReadFile(f)
		if os.IsNotExist(err) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range ranges.FindAll(b, -1) {
			if string(m) != want {
				t.Errorf("%s names the relay range %s; the TURN job's is %s", f, m, want)
			}
		}
	}
}
