package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"github.com/metal-stream/metal/internal/browsertest"
	"github.com/metal-stream/metal/internal/localcluster/clustertest"
	"github.com/metal-stream/metal/internal/netlab"
)

var (
	buildOnce sync.Once
	metalBin  string
	buildErr  error
	buildOut  []byte
)

// metalBinary builds cmd/metal once per test binary into a temporary dir.
func metalBinary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "metal-e2e-bin-")
		if err != nil {
			buildErr = err
			return
		}
		metalBin = filepath.Join(dir, "metal")
		cmd := exec.Command("go", "build", "-o", metalBin, "../cmd/metal")
		buildOut, buildErr = cmd.CombinedOutput()
	})
	if buildErr != nil {
		t.Fatalf("build metal: %v\n%s", buildErr, buildOut)
	}
	return metalBin
}

// TestMain moves the tests into a network
// namespace of their own (every packet on a private lo), starts one real
// Consul and Nomad for the package, and removes the built binary at the end.
func TestMain(m *testing.M) {
	browsertest.EnterNetns()
	if os.Getenv("METAL_TEST_NETNS") == "1" {
		// Test hosts outside every range the TURN filter denies: an edge's
		// relay address and a streamer, on this namespace's private lo.
		if err := netlab.AddLoopbackHosts(relayIP, streamIP); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
	code := clustertest.Run(m, clustertest.Options{})
	if metalBin != "" {
		os.RemoveAll(filepath.Dir(metalBin))
	}
	os.Exit(code)
}
