package streamer

import (
	"testing"

	"github.com/metal-stream/metal/internal/browsertest"
)

// TestMain moves the package's tests into a network namespace of their own:
// WebRTC between Chromium and the streamer stays on a private lo.
func TestMain(m *testing.M) {
	browsertest.MainInNetns(m)
}
