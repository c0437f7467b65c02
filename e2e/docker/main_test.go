package docker

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// edgeLabel marks the containers TestEdgesAsContainersNearestAndFailover
// starts, so that what a killed run left is found and removed.
const edgeLabel = "metal-e2e=edges"

// TestMain removes what an earlier run of this package left behind when it
// was killed before its cleanups (a go test timeout, Ctrl-C): edge
// containers, their networks and the names of their network namespaces.
// Only this package's own, by label or name prefix.
func TestMain(m *testing.M) {
	sweep()
	os.Exit(m.Run())
}

func sweep() {
	if out, err := exec.Command("docker", "ps", "-aq", "--filter", "label="+edgeLabel).Output(); err == nil {
		if ids := strings.Fields(string(out)); len(ids) > 0 {
			_ = exec.Command("docker", append([]string{"rm", "-f"}, ids...)...).Run()
		}
	}
	if out, err := exec.Command("docker", "network", "ls", "-q", "--filter", "name=metal-e2e-edges-").Output(); err == nil {
		if ids := strings.Fields(string(out)); len(ids) > 0 {
			_ = exec.Command("docker", append([]string{"network", "rm"}, ids...)...).Run()
		}
	}
	if out, err := exec.Command("ip", "netns", "list").Output(); err == nil {
		for _, l := range strings.Split(string(out), "\n") {
			if f := strings.Fields(l); len(f) > 0 && strings.HasPrefix(f[0], "metal") && strings.Contains(f[0], "-edge-") {
				_ = exec.Command("ip", "netns", "del", f[0]).Run()
			}
		}
	}
}
