package streamer

import (
	"sync"
	"testing"
	"time"
)

// keyRecorder records when key frames are forced.
type keyRecorder struct {
	mu   sync.Mutex
	keys []time.Time
}

func (k *keyRecorder) ForceKeyframe() {
	k.mu.Lock()
	k.keys = append(k.keys, time.Now())
	k.mu.Unlock()
}
func (k *keyRecorder) SetProperty(string, string) {}
func (k *keyRecorder) forced() []time.Time {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([]time.Time(nil), k.keys...)
}

// x264Media is Media for a 720p30 x264 stream with a recording encoder.
func x264Media(t *testing.T) (*Media, *keyRecorder) {
	t.Helper()
	md, err := newMedia(branch{Encoder: EncoderX264, Profile: ProfileConstrainedBaseline, LevelIdc: 31}, DefaultConfig(), newMetrics())
	if err != nil {
		t.Fatal(err)
	}
	rec := &keyRecorder{}
	md.setEncoder(rec)
	return md, rec
}

// TestKeyframeRequestsAreCoalescedNotDropped: a request forces a key frame
// at once; requests inside the next 250 ms (a second peer's PLI, a FIR)
// are not dropped but served by one key frame at the end of the gap; a
// storm never forces more than one per gap.
func TestKeyframeRequestsAreCoalescedNotDropped(t *testing.T) {
	md, rec := x264Media(t)
	md.RequestKeyframe()
	if n := len(rec.forced()); n != 1 {
		t.Fatalf("first request forced %d key frames, want 1 at once", n)
	}
	for range 20 { // a storm inside the gap
		md.RequestKeyframe()
	}
	deadline := time.Now().Add(5 * time.Second)
	for len(rec.forced()) < 2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(2 * keyframeGap) // nothing more may come of the storm
	keys := rec.forced()
	if len(keys) != 2 {
		t.Fatalf("a storm after a key frame forced %d in all, want 2 (the coalesced one)", len(keys))
	}
	if gap := keys[1].Sub(keys[0]); gap < keyframeGap-10*time.Millisecond {
		t.Errorf("the coalesced key frame came %v after the first, inside the %v gap", gap, keyframeGap)
	}
	// Quiet again: a request is served at once.
	md.RequestKeyframe()
	if n := len(rec.forced()); n != 3 {
		t.Fatalf("a request after a quiet gap: %d key frames, want 3", n)
	}
}
