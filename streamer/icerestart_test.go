package streamer

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/input"
	"github.com/chromedp/chromedp"

	"github.com/metal-stream/metal/internal/browsertest"
)

func TestParseFrag(t *testing.T) {
	good := "a=ice-ufrag:abcd\r\na=ice-pwd:0123456789abcdefghijkl\r\nm=video 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\na=candidate:1 1 udp 2122260223 127.0.0.1 5000 typ host\r\n"
	f, err := parseFrag([]byte(good))
	if err != nil || f.ufrag != "abcd" || len(f.candidates) != 1 {
		t.Fatalf("%+v %v", f, err)
	}
	for frag, want := range map[string]string{
		"a=candidate:1 1 udp 1 127.0.0.1 5000 typ host\r\n":         "no ice-ufrag and ice-pwd",
		"a=ice-ufrag:ab\r\na=ice-pwd:0123456789abcdefghijkl\r\n":    "ice-ufrag",
		"a=ice-ufrag:abcd\r\na=ice-pwd:short\r\n":                   "ice-pwd",
		"a=ice-ufrag:ab cd\r\na=ice-pwd:0123456789abcdefghijkl\r\n": "ice-ufrag",
		"a=ice-ufrag:abcd\r\na=ice-pwd:0123456789abcdefghijkl\r\n" + strings.Repeat("a=candidate:1 1 udp 1 127.0.0.1 5000 typ host\r\n", 65): "more than 64",
		"a=ice-ufrag:abcd\r\na=ice-pwd:0123456789abcdefghijkl\r\na=candidate:x\r\n":                                                          "candidate",
	} {
		if _, err := parseFrag([]byte(frag)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%.40q: %v, want %q", frag, err, want)
		}
	}
}

// TestBrowserICERestartKeepsThePeer: a forced ICE restart (WHEP PATCH)
// gives the same peer connection new ICE credentials on both sides; the
// stream, the input channel and the session go on, with one peer.
func TestBrowserICERestartKeepsThePeer(t *testing.T) {
	r := startStreamer(t, func(c *Config) { c.Audio = false })
	tab := ownerTab(t, browsertest.New(t), r)
	xd := openX(t, r.Display())
	const ufrags = `[metal.state.pc.localDescription.sdp.match(/a=ice-ufrag:(\S+)/)[1], metal.state.pc.currentRemoteDescription.sdp.match(/a=ice-ufrag:(\S+)/)[1]]`
	before, err := browsertest.Eval[[]string](tab, ufrags)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := browsertest.Eval[any](tab, `(metal.state.pc.marked = true, metal.loc = metal.state.location, 0)`); err != nil {
		t.Fatal(err)
	}
	if ok, err := browsertest.Eval[bool](tab, `metal.restartIce()`); err != nil || !ok {
		msg, _ := browsertest.Eval[string](tab, `String(metal.lastIceRestartError)`)
		t.Fatalf("ICE restart: %v %v: %s", ok, err, msg)
	}
	if err := browsertest.WaitTrue(tab, `metal.state.pc.marked && metal.state.location === metal.loc && ["connected", "completed"].includes(metal.state.pc.iceConnectionState)`, 15*time.Second); err != nil {
		t.Fatal(err)
	}
	after, err := browsertest.Eval[[]string](tab, ufrags)
	if err != nil || len(after) != 2 || after[0] == before[0] || after[1] == before[1] {
		t.Fatalf("ICE credentials before %v, after %v (%v): want both new", before, after, err)
	}
	frames, _ := browsertest.Eval[int](tab, `metal.stats.framesDecoded`)
	if err := browsertest.WaitTrue(tab, fmt.Sprintf(`metal.stats.framesDecoded > %d`, frames+30), 15*time.Second); err != nil {
		t.Fatalf("frames after the ICE restart: %v", err)
	}
	if n := r.peerCount(); n != 1 {
		t.Fatalf("%d peers after the ICE restart, want the one", n)
	}
	if err := chromedp.Do(tab, chromedp.MouseEvent(input.DispatchMouseEventTypeMouseMoved, 400, 200)); err != nil {
		t.Fatal(err)
	}
	waitX(t, "pointer at (400,200) after the ICE restart", func() bool { x, y := xd.Pointer(); return abs(x-400) <= 2 && abs(y-200) <= 2 })
}

func TestRestartOffer(t *testing.T) {
	old := "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 1 0\r\na=ice-ufrag:sess\r\n" +
		"m=video 9 UDP/TLS/RTP/SAVPF 102\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=ice-ufrag:oldu\r\na=ice-pwd:oldpasswordoldpassword1\r\na=candidate:1 1 udp 1 10.0.0.1 1 typ host\r\n" +
		"m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:1\r\na=ice-ufrag:oldu\r\na=ice-pwd:oldpasswordoldpassword1\r\n"
	f := iceFrag{ufrag: "newu", pwd: "newpasswordnewpassword1", candidates: []string{"candidate:2 1 udp 2 127.0.0.1 2 typ host"}}
	got, err := restartOffer(old, f)
	if err != nil {
		t.Fatal(err)
	}
	sections := strings.Split(got, "m=")
	if len(sections) != 3 || strings.Contains(sections[0], "ice-ufrag") {
		t.Fatalf("session-level credentials kept, or sections lost:\n%s", got)
	}
	video, audio := sections[1], sections[2]
	for _, sec := range []string{video, audio} {
		if !strings.Contains(sec, "a=ice-ufrag:newu\r\n") || !strings.Contains(sec, "a=ice-pwd:newpasswordnewpassword1\r\n") || strings.Contains(sec, "oldu") {
			t.Fatalf("credentials not replaced in every section:\n%s", got)
		}
	}
	// The bundle's first mid is 1 (audio): the candidates go there.
	if strings.Contains(video, "candidate") || !strings.Contains(audio, "a=candidate:2 1 udp 2 127.0.0.1 2 typ host\r\n") {
		t.Fatalf("candidates not in the bundle's section:\n%s", got)
	}
}
