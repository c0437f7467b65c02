package streamer

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/pion/sdp/v3"
)

// boundsRecorder checks every injected event stays on a 1280x720 screen
// and within the message bounds.
type boundsRecorder struct {
	t      *testing.T
	events int
}

func (b *boundsRecorder) MoveTo(x, y int) {
	b.events++
	if x < 0 || x >= 1280 || y < 0 || y >= 720 {
		b.t.Fatalf("pointer moved off screen to %d,%d", x, y)
	}
}
func (b *boundsRecorder) MoveBy(dx, dy int) {
	b.events++
	if abs(dx) > maxRelDelta || abs(dy) > maxRelDelta {
		b.t.Fatalf("relative move %d,%d beyond the bound", dx, dy)
	}
}
func (b *boundsRecorder) Button(n int, _ bool) {
	b.events++
	if n < 1 || n > 7 {
		b.t.Fatalf("button %d", n)
	}
}
func (b *boundsRecorder) Key(k uint32, _ bool) error {
	b.events++
	if k > maxKeysym {
		b.t.Fatalf("keysym %#x beyond the bound", k)
	}
	return nil
}

// FuzzParseInput: any data-channel message either parses into a message
// whose injection stays on screen and within bounds, or is refused with an
// error that wraps ErrBadInput (what the peer is told); nothing panics.
func FuzzParseInput(f *testing.F) {
	for _, s := range []string{
		`{"type":"key","keysym":97,"down":true}`, `{"type":"button","button":1,"down":false}`,
		`{"type":"move","x":0.5,"y":0.25}`, `{"type":"rel","dx":-3,"dy":7}`, `{"type":"wheel","dx":0,"dy":-1}`,
		`{"type":"move","x":1e308,"y":-1}`, `{"type":"key"}`, `{}`, `[]`, `{"type":"wheel","dy":16}{}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ParseInput(b)
		if err != nil {
			if !errors.Is(err, ErrBadInput) {
				t.Fatalf("refusal %v does not wrap ErrBadInput", err)
			}
			return
		}
		rec := &boundsRecorder{t: t}
		if err := m.Apply(rec, 1280, 720); err != nil {
			t.Fatalf("a message that parsed failed to apply: %v", err)
		}
		if rec.events > 2*maxWheel*2 {
			t.Fatalf("one message injected %d events", rec.events)
		}
	})
}

// FuzzCheckOffer: any WHEP body is either refused by checkOffer with an
// error (the streamer answers 400 before any WebRTC state exists) or is an
// SDP with a video m-line that parses again after a round trip; nothing
// panics.
func FuzzCheckOffer(f *testing.F) {
	f.Add([]byte("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 102\r\nc=IN IP4 0.0.0.0\r\na=recvonly\r\n"))
	f.Add([]byte("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"))
	f.Add([]byte("hello world"))
	f.Add([]byte(""))
	f.Add([]byte("v=0\r\nm=video"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > maxOfferBytes {
			return // refused by size before checkOffer
		}
		if err := checkOffer(b); err != nil {
			return
		}
		var d sdp.SessionDescription
		if err := d.UnmarshalString(string(b)); err != nil {
			t.Fatalf("accepted an offer that does not parse: %v", err)
		}
		out, err := d.Marshal()
		if err != nil {
			t.Fatalf("accepted offer does not marshal: %v", err)
		}
		var again sdp.SessionDescription
		if err := again.UnmarshalString(string(out)); err != nil {
			t.Fatalf("accepted offer does not survive a round trip: %v\n%s", err, fmt.Sprint(strings.Count(string(out), "\n")))
		}
	})
}
