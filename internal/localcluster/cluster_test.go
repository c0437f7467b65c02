package localcluster_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	nomad "github.com/hashicorp/nomad/api"
	"go.uber.org/goleak"

	"github.com/metal-stream/metal/internal/localcluster"
	"github.com/metal-stream/metal/internal/localcluster/clustertest"
)

func TestMain(m *testing.M) {
	clustertest.Main(m, clustertest.Options{})
}

// TestAgentsRunSafeForAClosedNetwork reads the running agents' own view of
// their configuration.
func TestAgentsRunSafeForAClosedNetwork(t *testing.T) {
	c := clustertest.Cluster(t)
	self, err := c.Nomad.Agent().Self()
	if err != nil {
		t.Fatal(err)
	}
	cfg := self.Config
	if v, _ := cfg["DisableUpdateCheck"].(bool); !v {
		t.Errorf("nomad DisableUpdateCheck = %v", cfg["DisableUpdateCheck"])
	}
	if v, _ := cfg["BindAddr"].(string); v != "127.0.0.1" {
		t.Errorf("nomad BindAddr = %q", v)
	}
	client, _ := cfg["Client"].(map[string]any)
	opts, _ := client["Options"].(map[string]any)
	if deny, _ := opts["fingerprint.denylist"].(string); !strings.Contains(deny, "env_aws") || !strings.Contains(deny, "env_gce") {
		t.Errorf("nomad fingerprint.denylist = %q", deny)
	}

	cself, err := c.Consul.Agent().Self()
	if err != nil {
		t.Fatal(err)
	}
	dbg := cself["DebugConfig"]
	if v, _ := dbg["DisableUpdateCheck"].(bool); !v {
		t.Errorf("consul DisableUpdateCheck = %v", dbg["DisableUpdateCheck"])
	}
	if addrs := fmt.Sprint(dbg["ClientAddrs"]); !strings.Contains(addrs, "127.0.0.1") || strings.Contains(addrs, "0.0.0.0") {
		t.Errorf("consul ClientAddrs = %s", addrs)
	}

	nodes, _, err := c.Nomad.Nodes().List(nil)
	if err != nil || len(nodes) != 1 {
		t.Fatalf("nodes = %v, %v", nodes, err)
	}
	node, _, err := c.Nomad.Nodes().Info(nodes[0].ID, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k := range node.Attributes {
		if strings.HasPrefix(k, "platform.aws") || strings.HasPrefix(k, "platform.gce") || strings.HasPrefix(k, "unique.platform.azure") {
			t.Errorf("cloud fingerprint ran: %s", k)
		}
	}
	if node.Attributes["consul.version"] == "" {
		t.Error("nomad did not fingerprint consul")
	}
}

// TestRawExecJobRuns registers a real batch job and waits for it to finish.
func TestRawExecJobRuns(t *testing.T) {
	c := clustertest.Cluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	hcl := `job "hello" {
  type = "batch"
  group "g" {
    task "t" {
      driver = "raw_exec"
      config {
        command = "/bin/sh"
        args    = ["-c", "echo ${var.word}"]
      }
    }
  }
}
variable "word" {
  type = string
}
`
	if _, err := localcluster.RunJob(ctx, c.Nomad, hcl, map[string]any{"word": "hi"}); err != nil {
		t.Fatal(err)
	}
	var index uint64
	for {
		allocs, meta, err := c.Nomad.Jobs().Allocations("hello", true, (&nomad.QueryOptions{WaitIndex: index}).WithContext(ctx))
		if err != nil {
			t.Fatal(err)
		}
		index = meta.LastIndex
		if len(allocs) == 1 && allocs[0].ClientStatus == nomad.AllocClientStatusComplete {
			break
		}
		if len(allocs) == 1 && allocs[0].ClientStatus == nomad.AllocClientStatusFailed {
			t.Fatalf("allocation failed: %+v", allocs[0].TaskStates)
		}
	}
	if err := localcluster.PurgeJobs(ctx, c.Nomad); err != nil {
		t.Fatal(err)
	}
}

// TestStopLeavesNothingRunning starts its own cluster with a long-running
// task and checks that Stop ends the task and both agents.
func TestStopLeavesNothingRunning(t *testing.T) {
	clustertest.Cluster(t) // skip or fail like the rest when binaries are missing
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c, err := localcluster.Start(ctx, localcluster.Options{})
	if err != nil {
		t.Fatal(err)
	}
	marker := fmt.Sprintf("metal-stop-test-%d", time.Now().UnixNano())
	hcl := fmt.Sprintf(`job "sleeper" {
  group "g" {
    task "t" {
      driver = "raw_exec"
      config {
        command = "/bin/sh"
        args    = ["-c", "exec sleep 600 # %s"]
      }
    }
  }
}
`, marker)
	if _, err := localcluster.RunJob(ctx, c.Nomad, hcl, nil); err != nil {
		t.Fatal(err)
	}
	if err := waitRunning(ctx, c.Nomad, "sleeper"); err != nil {
		t.Fatal(err)
	}
	pids := c.PIDs()
	if err := c.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	for _, pid := range pids {
		if err := syscall.Kill(pid, 0); err == nil {
			t.Errorf("agent pid %d still alive after Stop", pid)
		}
	}
	if _, err := os.Stat(c.Dir); !os.IsNotExist(err) {
		t.Errorf("cluster dir %s not removed: %v", c.Dir, err)
	}
	if p := findProcess(marker); p != "" {
		t.Errorf("task outlived the cluster: %s", p)
	}
}

func waitRunning(ctx context.Context, c *nomad.Client, job string) error {
	var index uint64
	for {
		allocs, meta, err := c.Jobs().Allocations(job, false, (&nomad.QueryOptions{WaitIndex: index}).WithContext(ctx))
		if err != nil {
			return err
		}
		index = meta.LastIndex
		for _, a := range allocs {
			if a.ClientStatus == nomad.AllocClientStatusRunning {
				return nil
			}
		}
	}
}

// findProcess returns the command line of a process containing marker.
func findProcess(marker string) string {
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err == nil && strings.Contains(string(b), marker) {
			return strings.ReplaceAll(string(b), "\x00", " ")
		}
	}
	return ""
}
