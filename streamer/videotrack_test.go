package streamer

import (
	"testing"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
)

// TestRTPTimestampsFollowCapturePTS: frames at 30 fps with two dropped
// before the encoder (a gap of three frame periods) keep the RTP clock on
// the capture clock: each frame's timestamp is its PTS at 90 kHz from the
// first, the gap shows on the frame after it, and every packet of a frame
// carries the frame's timestamp.
func TestRTPTimestampsFollowCapturePTS(t *testing.T) {
	v, err := newVideoTrack(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeH264, ClockRate: 90000})
	if err != nil {
		t.Fatal(err)
	}
	var got []*rtp.Packet
	v.write = func(p *rtp.Packet) error { got = append(got, p); return nil }
	frame := time.Second / 30
	pts := []time.Duration{5 * time.Second, 5*time.Second + frame, 5*time.Second + 4*frame, 5*time.Second + 5*frame}
	big := make([]byte, 3000) // more than one packet
	big[0], big[1], big[2], big[3], big[4] = 0, 0, 0, 1, 0x65
	for _, p := range pts {
		if err := v.writeFrame(big, p, frame); err != nil {
			t.Fatal(err)
		}
	}
	byFrame := map[uint32]int{}
	var order []uint32
	for _, p := range got {
		if byFrame[p.Timestamp] == 0 {
			order = append(order, p.Timestamp)
		}
		byFrame[p.Timestamp]++
	}
	if len(order) != len(pts) {
		t.Fatalf("%d distinct timestamps for %d frames", len(order), len(pts))
	}
	for i := 1; i < len(order); i++ {
		want := uint32((pts[i] - pts[0]) * 90000 / time.Second)
		if d := order[i] - order[0]; d != want {
			t.Errorf("frame %d at %d ticks after the first, want %d (its PTS)", i, d, want)
		}
		if byFrame[order[i]] < 2 {
			t.Errorf("frame %d: %d packets, want its packets to share its timestamp", i, byFrame[order[i]])
		}
	}

	// Without a PTS, the clock advances by the frame's duration.
	if err := v.writeFrame(big, -1, frame); err != nil {
		t.Fatal(err)
	}
	if d, want := got[len(got)-1].Timestamp-order[len(order)-1], uint32(frame*90000/time.Second); d != want {
		t.Errorf("a frame without PTS came %d ticks after the last, want %d", d, want)
	}

	// PTS that go back (a pipeline reset): the clock goes on forward and
	// follows the new PTS from there.
	before := got[len(got)-1].Timestamp
	for _, p := range []time.Duration{0, frame, 3 * frame} {
		if err := v.writeFrame(big, p, frame); err != nil {
			t.Fatal(err)
		}
	}
	var ts []uint32
	for _, p := range got {
		if len(ts) == 0 || ts[len(ts)-1] != p.Timestamp {
			ts = append(ts, p.Timestamp)
		}
	}
	ts = ts[len(ts)-3:]
	if int32(ts[0]-before) <= 0 {
		t.Errorf("after a PTS reset the clock went from %d to %d", before, ts[0])
	}
	if d1, d2 := ts[1]-ts[0], ts[2]-ts[1]; d1 != ticks(frame) || d2 != ticks(3*frame)-ticks(frame) {
		t.Errorf("after a PTS reset frames are %d and %d ticks apart, want %d and %d", d1, d2, ticks(frame), ticks(3*frame)-ticks(frame))
	}
}
