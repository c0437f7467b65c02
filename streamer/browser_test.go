package streamer

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/input"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/metal-stream/metal/internal/browsertest"
	"github.com/metal-stream/metal/internal/token"
	"github.com/metal-stream/metal/streamer/internal/x11"
)

// playerURL is the streamer's own page with a token for role.
func (r *running) playerURL(t *testing.T, role token.Role) string {
	return r.URL() + "/#stats=1&token=" + r.token(t, "sess-test", role)
}

// waitPlaying waits until Chromium has decoded frames of the expected size.
func waitPlaying(t *testing.T, tab context.Context, w, h int) {
	t.Helper()
	expr := fmt.Sprintf(`window.metal && metal.stats && metal.stats.framesDecoded > 20 && metal.stats.width === %d && metal.stats.height === %d && document.getElementById("video").videoWidth === %d`, w, h, w)
	if err := browsertest.WaitTrue(tab, expr, 45*time.Second); err != nil {
		t.Fatal(err)
	}
}

// TestBrowserDecodesFrames opens the player page in Chromium at 720p30 and
// 1080p30 and checks that H.264 frames of the right size decode, and that
// Opus audio decodes too.
func TestBrowserDecodesFrames(t *testing.T) {
	browser := browsertest.New(t)
	for _, res := range []struct{ w, h int }{{1280, 720}, {1920, 1080}} {
		t.Run(fmt.Sprintf("%dp30", res.h), func(t *testing.T) {
			r := startStreamer(t, func(c *Config) { c.Width, c.Height, c.FPS = res.w, res.h, 30 })
			tab := browsertest.Tab(t, browser)
			if err := chromedp.Do(tab, chromedp.Navigate(r.playerURL(t, token.RoleOwner))); err != nil {
				t.Fatal(err)
			}
			waitPlaying(t, tab, res.w, res.h)
			codec, err := browsertest.Eval[string](tab, `metal.stats.codec`)
			if err != nil || codec != "video/H264" {
				t.Fatalf("negotiated codec %q (%v), want video/H264", codec, err)
			}
			audio := `metal.state.pc.getStats().then(r => { let n = 0; r.forEach(s => { if (s.type === "inbound-rtp" && s.kind === "audio") n = s.totalSamplesReceived - (s.concealedSamples || 0); }); return n > 48000; })`
			if err := browsertest.WaitTrue(tab, `window.__a || (`+audio+`.then(v => window.__a = v), false)`, 20*time.Second); err != nil {
				t.Fatalf("audio did not decode: %v", err)
			}
			if h, _ := health(t, r.URL()); h.Peers != 1 {
				t.Fatalf("healthz peers = %d, want 1", h.Peers)
			}
		})
	}
}

// TestBrowserInputReachesX sends real mouse and key events to Chromium and
// reads the result back from the X server; a viewer's input is refused and
// malformed messages are answered with an error while the stream goes on.
func TestBrowserInputReachesX(t *testing.T) {
	r := startStreamer(t, func(c *Config) { c.Audio = false })
	browser := browsertest.New(t)
	tab := browsertest.Tab(t, browser)
	if err := chromedp.Do(tab, chromedp.EmulateViewport(1280, 720), chromedp.Navigate(r.playerURL(t, token.RoleOwner))); err != nil {
		t.Fatal(err)
	}
	waitPlaying(t, tab, 1280, 720)
	if err := browsertest.WaitTrue(tab, `metal.state.dc && metal.state.dc.readyState === "open"`, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	xd, err := x11.Open(r.Display())
	if err != nil {
		t.Fatal(err)
	}
	defer xd.Close()

	// Mouse: a real move over the video element.
	if err := chromedp.Do(tab, chromedp.MouseEvent(input.DispatchMouseEventTypeMouseMoved, 320, 180)); err != nil {
		t.Fatal(err)
	}
	waitX(t, "pointer at (320,180)", func() bool {
		x, y := xd.Pointer()
		return abs(x-320) <= 2 && abs(y-180) <= 2
	})

	// Keyboard: hold "a", read it back as held, release it.
	evs := kb.Encode('a')
	down, up := evs[0], evs[len(evs)-1]
	dispatch := func(p *input.DispatchKeyEventParams) error { return chromedp.Do(tab, keyAction(p)) }
	if err := dispatch(down); err != nil {
		t.Fatal(err)
	}
	waitX(t, "key a held", func() bool { return xd.KeyDown('a') })
	if err := dispatch(up); err != nil {
		t.Fatal(err)
	}
	waitX(t, "key a released", func() bool { return !xd.KeyDown('a') })

	// Malformed data-channel messages get an error reply; input still works.
	if _, err := browsertest.Eval[any](tab, `metal.state.dc.send("not json"), 0`); err != nil {
		t.Fatal(err)
	}
	if err := browsertest.WaitTrue(tab, `(metal.lastInputError || "").includes("bad input message")`, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := browsertest.Eval[any](tab, `metal.state.dc.send(JSON.stringify({type: "move", x: 2, y: 0})), 0`); err != nil {
		t.Fatal(err)
	}
	if err := browsertest.WaitTrue(tab, `(metal.lastInputError || "").includes("outside 0..1")`, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(tab, chromedp.MouseEvent(input.DispatchMouseEventTypeMouseMoved, 640, 360)); err != nil {
		t.Fatal(err)
	}
	waitX(t, "pointer at (640,360) after bad messages", func() bool {
		x, y := xd.Pointer()
		return abs(x-640) <= 2 && abs(y-360) <= 2
	})

	// A viewer sees the stream but cannot move the pointer.
	viewer := browsertest.Tab(t, browser)
	if err := chromedp.Do(viewer, chromedp.EmulateViewport(1280, 720), chromedp.Navigate(r.playerURL(t, token.RoleViewer))); err != nil {
		t.Fatal(err)
	}
	waitPlaying(t, viewer, 1280, 720)
	if err := browsertest.WaitTrue(viewer, `metal.state.dc && metal.state.dc.readyState === "open"`, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(viewer, chromedp.MouseEvent(input.DispatchMouseEventTypeMouseMoved, 100, 100)); err != nil {
		t.Fatal(err)
	}
	if err := browsertest.WaitTrue(viewer, `(metal.lastInputError || "").includes("view-only")`, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if x, y := xd.Pointer(); abs(x-640) > 2 || abs(y-360) > 2 {
		t.Fatalf("viewer moved the pointer to (%d,%d)", x, y)
	}
}

func keyAction(p *input.DispatchKeyEventParams) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		_, err := cdp.Call(ctx, tg, input.DispatchKeyEvent, *p)
		return err
	})
}

func waitX(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("X display never showed %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
