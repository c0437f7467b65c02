package turn

import (
	"fmt"
	"os"
	"os/exec"
	"testing"

	"github.com/metal-stream/metal/internal/browsertest"
)

// Test hosts: addresses on the private lo of the test's own network
// namespace, outside every denied range, standing for an edge's public relay
// address and a streamer.
const (
	relayIP  = "198.18.0.1"
	streamIP = "198.18.0.2"
)

func TestMain(m *testing.M) {
	browsertest.EnterNetns()
	if os.Getenv("METAL_TEST_NETNS") == "1" {
		for _, ip := range []string{relayIP, streamIP} {
			if out, err := exec.Command("ip", "addr", "add", ip+"/32", "dev", "lo").CombinedOutput(); err != nil {
				fmt.Fprintf(os.Stderr, "add %s to lo: %v %s\n", ip, err, out)
				os.Exit(1)
			}
		}
	}
	os.Exit(m.Run())
}
