package turn

import (
	"fmt"
	"os"
	"testing"

	"github.com/metal-stream/metal/internal/browsertest"
	"github.com/metal-stream/metal/internal/netlab"
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
		if err := netlab.AddLoopbackHosts(relayIP, streamIP); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
	os.Exit(m.Run())
}
