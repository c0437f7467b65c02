package jobs_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/metal-stream/metal/internal/localcluster"
	"github.com/metal-stream/metal/internal/localcluster/clustertest"
	"github.com/metal-stream/metal/jobs"
)

func TestMain(m *testing.M) {
	clustertest.Main(m, clustertest.Options{})
}

// variants are the variable sets each job is validated with: its defaults
// (production) and what `make dev` passes.
var variants = map[string][]map[string]string{
	"gateway.nomad.hcl": {
		{},
		{"driver": "raw_exec", "metal_binary": "/usr/local/bin/metal", "open_mode": "true"},
	},
}

// TestJobsValidate runs the real `nomad job validate` against the real agent
// for every job file and every variant.
func TestJobsValidate(t *testing.T) {
	c := clustertest.Cluster(t)
	bin, err := localcluster.FindBinary("nomad")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range jobs.Names() {
		vs, ok := variants[name]
		if !ok {
			t.Errorf("%s: add its variable sets to the variants table", name)
			continue
		}
		for i, vars := range vs {
			t.Run(name+"/"+string(rune('a'+i)), func(t *testing.T) {
				args := []string{"job", "validate"}
				for k, v := range vars {
					args = append(args, "-var", k+"="+v)
				}
				args = append(args, filepath.Join(".", name))
				cmd := exec.Command(bin, args...)
				cmd.Env = append(os.Environ(), "NOMAD_ADDR="+c.NomadAddr)
				out, err := cmd.CombinedOutput()
				if err != nil || !strings.Contains(string(out), "Job validation successful") {
					t.Fatalf("nomad %s: %v\n%s", strings.Join(args, " "), err, out)
				}
			})
		}
	}
}

// TestJobsRejectBadVariables checks that the jobs' own validation answers a
// bad variable with a clear message.
func TestJobsRejectBadVariables(t *testing.T) {
	c := clustertest.Cluster(t)
	hcl, err := jobs.Read("gateway.nomad.hcl")
	if err != nil {
		t.Fatal(err)
	}
	_, err = localcluster.ParseJob(t.Context(), c.Nomad, hcl, map[string]any{"driver": "qemu"})
	if err == nil || !strings.Contains(err.Error(), `The driver must be \"docker\" or \"raw_exec\"`) && !strings.Contains(err.Error(), `The driver must be "docker" or "raw_exec"`) {
		t.Fatalf("bad driver accepted or unclear: %v", err)
	}
}

func TestEveryJobFileIsEmbedded(t *testing.T) {
	files, _ := filepath.Glob("*.nomad.hcl")
	if len(files) == 0 || len(files) != len(jobs.Names()) {
		t.Fatalf("files on disk %v, embedded %v", files, jobs.Names())
	}
}
