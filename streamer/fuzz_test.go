package streamer

import (
	"bytes"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/metal-stream/metal/internal/token"
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

// FuzzCheckOffer: any WHEP body sent to a running streamer's POST /whep
// (with a fresh valid owner token each time) gets 201 or a 4xx, never a 5xx
// or a panic; a refused body leaves no peer, no reserved slot and no spent
// token behind; an answered one is a real peer that DELETE removes. An
// accepted body is an SDP with a video m-line.
func FuzzCheckOffer(f *testing.F) {
	f.Add([]byte("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 102\r\nc=IN IP4 0.0.0.0\r\na=recvonly\r\n"))
	f.Add([]byte("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"))
	f.Add([]byte("hello world"))
	f.Add([]byte(""))
	f.Add([]byte("v=0\r\nm=video"))
	r := startStreamer(f, func(c *Config) { c.Audio = false })
	signer, _ := token.NewSigner(testKey)
	f.Fuzz(func(t *testing.T, b []byte) {
		tok, _ := signer.SignOnce("sess-test", token.RoleOwner, time.Minute, time.Now())
		req := httptest.NewRequest(http.MethodPost, "/whep", bytes.NewReader(b))
		req.Header.Set("Content-Type", "application/sdp")
		req.Header.Set("Authorization", "Bearer "+tok)
		rec := httptest.NewRecorder()
		r.Handler().ServeHTTP(rec, req)
		r.mu.Lock()
		peers, pending, spent := len(r.peers), r.pending, len(r.spent)
		_, spentThis := r.spent[claimsID(t, signer, tok)]
		r.mu.Unlock()
		switch {
		case rec.Code == http.StatusCreated:
			if checkOfferErr(b) != nil {
				t.Fatalf("answered an offer checkOffer refuses")
			}
			id := strings.TrimPrefix(rec.Header().Get("Location"), "/whep/")
			if !r.removePeer(id) {
				t.Fatalf("answered, but no peer %q", id)
			}
		case rec.Code >= 500:
			t.Fatalf("%d %s", rec.Code, rec.Body)
		case rec.Code < 400:
			t.Fatalf("unexpected %d", rec.Code)
		default:
			if peers != 0 || pending != 0 {
				t.Fatalf("a refused offer (%d) left %d peers and %d reserved slots", rec.Code, peers, pending)
			}
			if spentThis && (len(b) > maxOfferBytes || checkOfferErr(b) != nil) {
				t.Fatalf("a body refused before WebRTC spent its token (%d spent)", spent)
			}
		}
	})
}

func claimsID(t *testing.T, s *token.Signer, tok string) string {
	c, err := s.Verify(tok, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return c.ID
}

func checkOfferErr(b []byte) error {
	_, err := checkOffer(b)
	return err
}
