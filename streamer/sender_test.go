package streamer

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestEncoderNeverWaitsOnTheNetwork: the encoder's callback (writeVideo)
// returns at once while the sender is stuck (a slow peer, a starved CPU);
// frames past the queue are dropped and counted, with a key frame asked
// for, since later frames refer to them; once the sender moves again it
// writes what it kept, in order.
func TestEncoderNeverWaitsOnTheNetwork(t *testing.T) {
	md, rec := x264Media(t)
	release := make(chan struct{})
	var mu sync.Mutex
	var sent []time.Duration
	md.writeFrame = func(_ []byte, pts, _ time.Duration) error {
		<-release
		mu.Lock()
		sent = append(sent, pts)
		mu.Unlock()
		return nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = md.send(ctx) }()

	n := 20
	done := make(chan struct{})
	go func() {
		for i := range n {
			md.writeVideo([]byte{0, 0, 0, 1, 0x41}, time.Duration(i)*time.Millisecond, 0, 0)
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("writeVideo waited on a stalled sender")
	}
	dropped := int(testutil.ToFloat64(md.m.framesDropped))
	if dropped < n-sendQueue-1 {
		t.Fatalf("%d of %d frames dropped with the sender stalled, want at least %d", dropped, n, n-sendQueue-1)
	}
	if len(rec.forced()) == 0 {
		t.Error("no key frame asked for after dropping frames")
	}
	close(release)
	for until := time.Now().Add(5 * time.Second); len(md.queue) > 0; time.Sleep(time.Millisecond) {
		if time.Now().After(until) {
			t.Fatal("the sender did not drain its queue")
		}
	}
	// Until a key frame, every frame after a drop is dropped too, queue
	// room or not: it refers to what the browser never got. Each asks for
	// a key frame again (coalesced), in case the one asked for was lost.
	before, keys := int(testutil.ToFloat64(md.m.framesDropped)), int(testutil.ToFloat64(md.m.keyframeRequests))
	md.writeVideo([]byte{0, 0, 0, 1, 0x41}, time.Duration(n)*time.Millisecond, 0, 0)
	if got := int(testutil.ToFloat64(md.m.framesDropped)); got != before+1 || !md.dropping.Load() {
		t.Fatalf("a P-frame after a drop, with the queue empty, was not dropped (%d → %d)", before, got)
	}
	if got := int(testutil.ToFloat64(md.m.keyframeRequests)); got != keys+1 {
		t.Errorf("a frame dropped waiting for a key frame did not ask again (%d → %d requests)", keys, got)
	}
	// A key frame (SPS, PPS, IDR) ends that.
	key := []byte{0, 0, 0, 1, 0x67, 0x42, 0, 0, 0, 1, 0x68, 0, 0, 0, 1, 0x65, 0x88}
	md.writeVideo(key, time.Duration(n+1)*time.Millisecond, 0, 0)
	md.writeVideo([]byte{0, 0, 0, 1, 0x41}, time.Duration(n+2)*time.Millisecond, 0, 0)
	dropped = int(testutil.ToFloat64(md.m.framesDropped))
	if md.dropping.Load() || dropped != before+1 {
		t.Fatalf("after a key frame: dropping %v, %d dropped (want %d)", md.dropping.Load(), dropped, before+1)
	}
	n += 3
	deadline := time.Now().Add(5 * time.Second)
	for {
		mu.Lock()
		got := append([]time.Duration(nil), sent...)
		mu.Unlock()
		if len(got) == n-dropped {
			for i := 1; i < len(got); i++ {
				if got[i] <= got[i-1] {
					t.Fatalf("frames sent out of order: %v", got)
				}
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("sent %d frames, want the %d kept", len(got), n-dropped)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
