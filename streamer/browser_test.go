package streamer

import (
	"context"
	"fmt"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/cdproto/input"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
	"github.com/pion/sdp/v3"

	"github.com/metal-stream/metal/internal/browsertest"
	"github.com/metal-stream/metal/internal/syncbuf"
	"github.com/metal-stream/metal/internal/token"
	"github.com/metal-stream/metal/streamer/internal/x11"
)

// playerURL is the streamer's own page with a token for role.
func (r *running) playerURL(t testing.TB, role token.Role) string {
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
// Opus audio decodes too. At 720p x264 sends what the NVENC branch sends
// (High, the same level, the same fmtp), so the chain after the encoder a
// GPU's stream takes is the one Chromium decodes here. Both check that the
// playout-delay extension is in Chromium's offer and kept in the answer.
func TestBrowserDecodesFrames(t *testing.T) {
	browser := browsertest.New(t)
	for _, res := range []struct {
		w, h    int
		profile string
	}{{1280, 720, ProfileHigh}, {1920, 1080, "auto"}} {
		t.Run(fmt.Sprintf("%dp30 %s", res.h, res.profile), func(t *testing.T) {
			r := startStreamer(t, func(c *Config) {
				c.Width, c.Height, c.FPS, c.Encoder, c.H264Profile = res.w, res.h, 30, EncoderX264, res.profile
			})
			tab := browsertest.Tab(t, browser)
			if err := chromedp.Do(tab, chromedp.Navigate(r.playerURL(t, token.RoleOwner))); err != nil {
				t.Fatal(err)
			}
			waitPlaying(t, tab, res.w, res.h)
			codec, err := browsertest.Eval[string](tab, `metal.stats.codec`)
			if err != nil || codec != "video/H264" {
				t.Fatalf("negotiated codec %q (%v), want video/H264", codec, err)
			}
			// The answer's fmtp is the one the stream's branch chooses for
			// Chromium's offer; at 720p, the one the NVENC branch would.
			offer, err := browsertest.Eval[string](tab, `metal.state.pc.localDescription.sdp`)
			if err != nil {
				t.Fatal(err)
			}
			answer, err := browsertest.Eval[string](tab, `metal.state.pc.remoteDescription.sdp`)
			if err != nil {
				t.Fatal(err)
			}
			var d sdp.SessionDescription
			if err := d.UnmarshalString(offer); err != nil {
				t.Fatal(err)
			}
			stream := r.branch
			if res.profile == ProfileHigh {
				nv, err := buildBranch(EncoderNVH264, videoParams{Width: res.w, Height: res.h, FPS: 30, Kbps: r.cfg.StartKbps, Profile: "auto"},
					&fakeGPU{t: t, props: nvh264encProps})
				if err != nil {
					t.Fatal(err)
				}
				if nv.Profile != stream.Profile || nv.LevelIdc != stream.LevelIdc {
					t.Fatalf("x264 sends %s level %d, NVENC would send %s level %d", stream.Profile, stream.LevelIdc, nv.Profile, nv.LevelIdc)
				}
				stream = nv
			}
			want, err := answerFmtp(&d, stream)
			if err != nil {
				t.Fatal(err)
			}
			// pion's answer repeats the offer's fmtp for the codec it
			// matched (the offer's level too: with level asymmetry Chromium
			// decodes the stream's higher one); its profile is the one
			// answerFmtp chose.
			plid := want[strings.LastIndex(want, "=")+1:]
			if !regexp.MustCompile(`a=fmtp:\d+ [^\r]*packetization-mode=1;profile-level-id=` + plid[:4]).MatchString(answer) {
				t.Fatalf("the answer lacks H.264 profile %s (%s):\n%s", plid[:4], want, answer)
			}
			// Chromium decodes it as that profile (its codec stats name
			// the fmtp it offered for the payload type the answer chose).
			got, err := browsertest.Eval[string](tab, `metal.state.pc.getStats().then(r => { let f = ""; r.forEach(s => { if (s.type === "codec" && s.mimeType === "video/H264") f = s.sdpFmtpLine; }); return f; })`)
			if err != nil || !strings.Contains(got, "profile-level-id="+plid[:4]) {
				t.Fatalf("Chromium's H.264 codec has fmtp %q (%v), want profile %s", got, err, plid[:4])
			}
			for side, sd := range map[string]string{"Chromium's offer": offer, "the answer": answer} {
				if !strings.Contains(sd, PlayoutDelayURI) {
					t.Fatalf("%s lacks the playout-delay extension:\n%s", side, sd)
				}
			}
			audio := `metal.state.pc.getStats().then(r => { let n = 0; r.forEach(s => { if (s.type === "inbound-rtp" && s.kind === "audio") n = s.totalSamplesReceived - (s.concealedSamples || 0); }); return n > 48000; })`
			if err := browsertest.WaitTrue(tab, `window.__a || (`+audio+`.then(v => window.__a = v), false)`, 20*time.Second); err != nil {
				t.Fatalf("audio did not decode: %v", err)
			}
			if h, _ := health(t, r.URL()); h.Peers != 1 || h.Fmtp != r.branch.Fmtp() || h.NotChosen != nil {
				t.Fatalf("healthz peers = %d, fmtp %q, not chosen %v; want 1, %q and none (x264 was asked for)", h.Peers, h.Fmtp, h.NotChosen, r.branch.Fmtp())
			}
		})
	}
}

// sameFmtp compares two fmtp lines as parameter sets.
func sameFmtp(a, b string) bool {
	set := func(s string) map[string]bool {
		m := map[string]bool{}
		for _, kv := range strings.Split(s, ";") {
			m[strings.ToLower(strings.TrimSpace(kv))] = true
		}
		return m
	}
	sa, sb := set(a), set(b)
	if len(sa) != len(sb) {
		return false
	}
	for k := range sa {
		if !sb[k] {
			return false
		}
	}
	return true
}

// TestBrowserInputReachesX sends real mouse and key events to Chromium and
// reads the result back from the X server; a viewer's input is refused and
// malformed messages are answered with an error while the stream goes on.
func TestBrowserInputReachesX(t *testing.T) {
	r := startStreamer(t, func(c *Config) { c.Audio = false })
	browser := browsertest.New(t)
	tab := ownerTab(t, browser, r)
	xd := openX(t, r.Display())

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

	// A key held when the page loses focus (Alt+Tab: its keyup goes to
	// another window) is released in the session.
	evs = kb.Encode('b')
	if err := dispatch(evs[0]); err != nil {
		t.Fatal(err)
	}
	waitX(t, "key b held", func() bool { return xd.KeyDown('b') })
	if _, err := browsertest.Eval[any](tab, `window.dispatchEvent(new Event("blur")), 0`); err != nil {
		t.Fatal(err)
	}
	waitX(t, "key b released when the page lost focus", func() bool { return !xd.KeyDown('b') })

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

// ownerTab opens the owner's player for r in a 1280x720 tab of browser (after setup,
// such as touch emulation), and returns once it plays and its input
// channel is open.
func ownerTab(t *testing.T, browser context.Context, r *running, setup ...chromedp.Action[chromedp.Void]) context.Context {
	t.Helper()
	tab := browsertest.Tab(t, browser)
	steps := append(append([]chromedp.Action[chromedp.Void]{chromedp.EmulateViewport(1280, 720)}, setup...), chromedp.Navigate(r.playerURL(t, token.RoleOwner)))
	if err := chromedp.Do(tab, steps...); err != nil {
		t.Fatal(err)
	}
	waitPlaying(t, tab, 1280, 720)
	if err := browsertest.WaitTrue(tab, `metal.state.dc && metal.state.dc.readyState === "open"`, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	return tab
}

// openX connects to the session's display for the test's length.
func openX(t *testing.T, display string) *x11.Display {
	t.Helper()
	xd, err := x11.Open(display)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(xd.Close)
	return xd
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

// TestBrowserDrawsTheCursor: the player draws the X cursor (image and
// hotspot from XFixes) as the video's CSS cursor and follows each change
// the desktop makes; a spectator draws the image where the pointer is (its
// own mouse stays an arrow), also when it joins while the pointer is still;
// both hide it when the application hides it; the capture leaves the
// pointer out.
func TestBrowserDrawsTheCursor(t *testing.T) {
	browser := browsertest.New(t)
	r := startStreamer(t, func(c *Config) { c.Encoder = EncoderX264 })
	if r.showPointer {
		t.Fatal("the capture draws the pointer although XFixes is there")
	}
	xd := openX(t, r.display)
	xd.MoveTo(640, 360)
	open := func(role token.Role) context.Context {
		tab := browsertest.Tab(t, browser)
		// A square window: the frame is letterboxed, as on a phone.
		if err := chromedp.Do(tab, chromedp.EmulateViewport(900, 900)); err != nil {
			t.Fatal(err)
		}
		if err := chromedp.Do(tab, chromedp.Navigate(r.playerURL(t, role))); err != nil {
			t.Fatal(err)
		}
		waitPlaying(t, tab, 1280, 720)
		return tab
	}
	owner, viewer := open(token.RoleOwner), open(token.RoleViewer)
	const videoCSS = `document.getElementById("video").style.cursor`
	const overlay = `document.getElementById("remote-pointer")`
	// Xvfb's root cursor at first, then the crosshair a desktop sets: each
	// a PNG as big as X says, with X's hotspot.
	last := uint64(0)
	for _, step := range []func(){func() {}, func() { xd.DefineRootCursor(34) /* XC_crosshair */ }} {
		step()
		fresh := fmt.Sprintf(`metal.cursor && metal.cursor.seq > %d && !metal.cursor.hidden`, last)
		if err := browsertest.WaitTrue(owner, fresh+` && `+videoCSS+`.startsWith('url("data:image/png;base64,')`, 10*time.Second); err != nil {
			t.Fatalf("player's cursor after change %d: %v", last, err)
		}
		if err := browsertest.WaitTrue(viewer, fresh+` && `+overlay+`.src === metal.cursor.image && !`+overlay+`.hidden && `+videoCSS+` === "default"`, 10*time.Second); err != nil {
			t.Fatalf("spectator's cursor after change %d: %v", last, err)
		}
		m, err := browsertest.Eval[cursorMessage](owner, `metal.cursor`)
		if err != nil {
			t.Fatal(err)
		}
		size, err := browsertest.Eval[[]int](owner, `new Promise(ok => { const i = new Image(); i.onload = () => ok([i.width, i.height]); i.src = metal.cursor.image; })`)
		if err != nil || len(size) != 2 || size[0] == 0 || m.HotX < 0 || m.HotX >= size[0] || m.HotY < 0 || m.HotY >= size[1] {
			t.Fatalf("cursor image %v (%v) with hotspot %d,%d", size, err, m.HotX, m.HotY)
		}
		style, _ := browsertest.Eval[string](owner, videoCSS)
		if !strings.HasSuffix(style, fmt.Sprintf(" %d %d, default", m.HotX, m.HotY)) {
			t.Fatalf("CSS cursor %q lacks hotspot %d %d", style[max(0, len(style)-40):], m.HotX, m.HotY)
		}
		last = m.Seq
	}
	// The spectator's image sits with its hotspot where the pointer is in
	// the letterboxed frame; one who joins while the pointer is still gets
	// it at once.
	at := func(fx, fy float64) string {
		return fmt.Sprintf(`(() => { const v = document.getElementById("video").getBoundingClientRect(), o = %s.getBoundingClientRect();
			const s = Math.min(v.width / 1280, v.height / 720), w = 1280 * s, h = 720 * s;
			const x = v.left + (v.width - w) / 2 + %g * w, y = v.top + (v.height - h) / 2 + %g * h;
			return !%s.hidden && Math.abs(o.left + metal.cursor.hot_x - x) < 2 && Math.abs(o.top + metal.cursor.hot_y - y) < 2; })()`, overlay, fx, fy, overlay)
	}
	xd.MoveTo(320, 180)
	if err := browsertest.WaitTrue(viewer, at(0.25, 0.25), 10*time.Second); err != nil {
		t.Fatalf("spectator's pointer at (320,180): %v", err)
	}
	late := open(token.RoleViewer)
	if err := browsertest.WaitTrue(late, at(0.25, 0.25), 10*time.Second); err != nil {
		t.Fatalf("a spectator joining while the pointer is still: %v", err)
	}
	if p, _ := browsertest.Eval[bool](owner, `!!metal.pointer`); p {
		t.Error("the player got pointer positions (its own mouse is the pointer)")
	}
	xd.BlankRootCursor()
	if err := browsertest.WaitTrue(owner, `metal.cursor.hidden && `+videoCSS+` === "none"`, 10*time.Second); err != nil {
		t.Fatalf("player's hidden cursor: %v", err)
	}
	for _, tab := range []context.Context{viewer, late} {
		if err := browsertest.WaitTrue(tab, `metal.cursor.hidden && `+overlay+`.hidden`, 10*time.Second); err != nil {
			t.Fatalf("spectator's hidden cursor: %v", err)
		}
	}
}

// xEvents records the X events xev sees on the root window of display
// (Xvfb has no window manager in these tests, so input lands there).
func xEvents(t *testing.T, display string) *syncbuf.Buffer {
	t.Helper()
	cmd := exec.Command("xev", "-display", display, "-root", "-event", "button", "-event", "keyboard")
	out := &syncbuf.Buffer{}
	cmd.Stdout = out
	if err := cmd.Start(); err != nil {
		t.Fatalf("xev (x11-utils): %v", err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	time.Sleep(300 * time.Millisecond) // xev selects its events
	return out
}

func touchAction(typ input.DispatchTouchEventType, points ...[2]float64) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		p := input.DispatchTouchEventParams{Type: typ, TouchPoints: []*input.TouchPoint{}}
		for _, xy := range points {
			p.TouchPoints = append(p.TouchPoints, &input.TouchPoint{X: xy[0], Y: xy[1]})
		}
		_, err := cdp.Call(ctx, tg, input.DispatchTouchEvent, p)
		return err
	})
}

// TestBrowserTouchInput: on a touch screen, one finger dragging moves the
// X pointer without clicking, a tap clicks where it lands, two fingers
// dragging up scroll down (X button 5), and the Keyboard button's field
// types what the on-screen keyboard inserts.
func TestBrowserTouchInput(t *testing.T) {
	r := startStreamer(t, func(c *Config) { c.Audio = false })
	touchOn := chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		_, err := cdp.Call(ctx, tg, emulation.SetTouchEmulationEnabled, emulation.SetTouchEmulationEnabledParams{Enabled: true, MaxTouchPoints: 5})
		return err
	})
	tab := ownerTab(t, browsertest.New(t), r, touchOn)
	xd := openX(t, r.Display())
	events := xEvents(t, r.Display())
	defer func() {
		if t.Failed() {
			t.Logf("xev saw:\n%s", events.String())
		}
	}()
	presses := func(button int) int { // ButtonPress events of button
		n := 0
		for _, ev := range strings.Split(events.String(), "\n\n") {
			if strings.HasPrefix(strings.TrimSpace(ev), "ButtonPress event") && strings.Contains(ev, fmt.Sprintf("button %d,", button)) {
				n++
			}
		}
		return n
	}

	// Drag: the pointer follows the finger, nothing is clicked.
	if err := chromedp.Do(tab, touchAction(input.DispatchTouchEventTypeTouchStart, [2]float64{100, 100}),
		touchAction(input.DispatchTouchEventTypeTouchMove, [2]float64{200, 150}),
		touchAction(input.DispatchTouchEventTypeTouchMove, [2]float64{320, 180}),
		touchAction(input.DispatchTouchEventTypeTouchEnd)); err != nil {
		t.Fatal(err)
	}
	waitX(t, "pointer dragged to (320,180)", func() bool {
		x, y := xd.Pointer()
		return abs(x-320) <= 2 && abs(y-180) <= 2
	})
	time.Sleep(300 * time.Millisecond)
	if n := presses(1); n != 0 {
		t.Fatalf("a drag clicked (%d presses of button 1)", n)
	}

	// Tap: a click where the finger lands.
	if err := chromedp.Do(tab, touchAction(input.DispatchTouchEventTypeTouchStart, [2]float64{640, 360}),
		touchAction(input.DispatchTouchEventTypeTouchEnd)); err != nil {
		t.Fatal(err)
	}
	waitX(t, "a tap's click at (640,360)", func() bool {
		x, y := xd.Pointer()
		return presses(1) == 1 && abs(x-640) <= 2 && abs(y-360) <= 2
	})

	// Two fingers drag up: the content follows, scrolling down.
	if err := chromedp.Do(tab, touchAction(input.DispatchTouchEventTypeTouchStart, [2]float64{600, 500}, [2]float64{700, 500}),
		touchAction(input.DispatchTouchEventTypeTouchMove, [2]float64{600, 440}, [2]float64{700, 440}),
		touchAction(input.DispatchTouchEventTypeTouchMove, [2]float64{600, 380}, [2]float64{700, 380}),
		touchAction(input.DispatchTouchEventTypeTouchEnd)); err != nil {
		t.Fatal(err)
	}
	waitX(t, "two-finger scroll as button 5", func() bool { return presses(5) >= 1 })
	if n := presses(1); n != 1 {
		t.Fatalf("the scroll clicked: %d presses of button 1, want the tap's 1", n)
	}

	// The on-screen keyboard: its button shows on a touch screen, and what
	// it inserts into the field is typed in the session.
	if shown, err := browsertest.Eval[bool](tab, `!document.getElementById("keyboard").hidden`); err != nil || !shown {
		t.Fatalf("no Keyboard button on a touch screen (%v)", err)
	}
	insert := chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		_, err := cdp.Call(ctx, tg, input.InsertText, input.InsertTextParams{Text: "hi"})
		return err
	})
	if _, err := browsertest.Eval[any](tab, `document.getElementById("keyboard").click(), 0`); err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(tab, insert); err != nil {
		t.Fatal(err)
	}
	waitX(t, "h and i typed from the on-screen keyboard", func() bool {
		out := events.String()
		return strings.Count(out, "KeyPress event") >= 2 && strings.Contains(out, "(keysym 0x68, h)") && strings.Contains(out, "(keysym 0x69, i)")
	})
}

// TestBrowserTypesAnyLayout: what a player's keyboard layout types reaches
// the session as that keysym, whatever the session's US map: é and ß (on
// no key of it), @ without Shift (a German AltGr+Q: on the US map it is
// Shift+2) and / with Shift held (German Shift+7: on the US map Shift makes
// it ?); a plain letter keeps its real key (games read keycodes).
func TestBrowserTypesAnyLayout(t *testing.T) {
	r := startStreamer(t, func(c *Config) { c.Audio = false })
	browser := browsertest.New(t)
	tab := ownerTab(t, browser, r)
	events := xEvents(t, r.Display())
	defer func() {
		if t.Failed() {
			t.Logf("xev saw:\n%s", events.String())
		}
	}()
	key := func(typ input.DispatchKeyEventType, k, code string) {
		t.Helper()
		p := &input.DispatchKeyEventParams{Type: typ, Key: k, Code: code}
		if err := chromedp.Do(tab, keyAction(p)); err != nil {
			t.Fatal(err)
		}
	}
	press := func(k, code string) {
		key(input.DispatchKeyEventTypeKeyDown, k, code)
		key(input.DispatchKeyEventTypeKeyUp, k, code)
	}
	press("é", "Digit2")
	press("ß", "Minus")
	press("@", "KeyQ")
	key(input.DispatchKeyEventTypeKeyDown, "Shift", "ShiftLeft")
	press("/", "Digit7")
	key(input.DispatchKeyEventTypeKeyUp, "Shift", "ShiftLeft")
	press("a", "KeyA")
	for _, want := range []string{"(keysym 0xe9, eacute)", "(keysym 0xdf, ssharp)", "(keysym 0x40, at)", "(keysym 0x2f, slash)", "keycode 38 (keysym 0x61, a)"} {
		waitX(t, want, func() bool {
			return strings.Contains(events.String(), "KeyPress event") && strings.Contains(events.String(), want)
		})
	}
	if strings.Contains(events.String(), "(keysym 0x3f, question)") || strings.Contains(events.String(), "(keysym 0x32, 2)") {
		t.Fatal("the session typed the US map's key instead of the player's character")
	}
}

// TestBrowserPointerLockMovesRelatively: with the mouse locked (the Lock
// mouse button), the player sends relative motion, as games want: the X
// pointer moves by the mouse's movement from where it was, not to where
// the (hidden) browser cursor would be; and keys go by their place.
func TestBrowserPointerLockMovesRelatively(t *testing.T) {
	r := startStreamer(t, func(c *Config) { c.Audio = false })
	tab := ownerTab(t, browsertest.New(t), r)
	xd := openX(t, r.Display())
	button, err := browsertest.Eval[[]float64](tab, `(() => { const b = document.getElementById("lock").getBoundingClientRect(); return [b.x + b.width / 2, b.y + b.height / 2]; })()`)
	if err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(tab, chromedp.MouseClickXY(button[0], button[1])); err != nil {
		t.Fatal(err)
	}
	if err := browsertest.WaitTrue(tab, `metal.state.pointerLocked`, 5*time.Second); err != nil {
		t.Fatalf("the mouse did not lock: %v", err)
	}
	x0, y0 := xd.Pointer()
	// 100 px left and 50 up from where the lock was taken.
	if err := chromedp.Do(tab, chromedp.MouseEvent(input.DispatchMouseEventTypeMouseMoved, button[0]-100, button[1]-50)); err != nil {
		t.Fatal(err)
	}
	waitX(t, fmt.Sprintf("pointer moved by (-100,-50) from (%d,%d)", x0, y0), func() bool {
		x, y := xd.Pointer()
		return abs(x-(x0-100)) <= 2 && abs(y-(y0-50)) <= 2
	})

	// Keys by place, as games want: an AZERTY keyboard's A (where a US
	// keyboard has Q) is the Q key in the session, its Z the W.
	for _, k := range []struct {
		key, code string
		want      uint32
	}{{"a", "KeyQ", 'q'}, {"z", "KeyW", 'w'}} {
		p := &input.DispatchKeyEventParams{Type: input.DispatchKeyEventTypeKeyDown, Key: k.key, Code: k.code, Text: k.key}
		if err := chromedp.Do(tab, keyAction(p)); err != nil {
			t.Fatal(err)
		}
		waitX(t, fmt.Sprintf("%s at %s held as %c", k.key, k.code, k.want), func() bool { return xd.KeyDown(k.want) })
		p.Type, p.Text = input.DispatchKeyEventTypeKeyUp, ""
		if err := chromedp.Do(tab, keyAction(p)); err != nil {
			t.Fatal(err)
		}
		waitX(t, fmt.Sprintf("%c released", k.want), func() bool { return !xd.KeyDown(k.want) })
	}
}

// TestBrowserFullscreenLocksTheKeyboard: the Fullscreen button also locks
// the keyboard (Keyboard Lock API), so shortcuts the browser would eat
// (Esc, Ctrl+W) reach the session; leaving fullscreen unlocks it.
func TestBrowserFullscreenLocksTheKeyboard(t *testing.T) {
	r := startStreamer(t, func(c *Config) { c.Audio = false })
	tab := ownerTab(t, browsertest.New(t), r)
	// Count the page's calls into the Keyboard Lock API (they go through).
	if _, err := browsertest.Eval[any](tab, `(() => {
	  const k = navigator.keyboard, lock = k.lock.bind(k), unlock = k.unlock.bind(k);
	  window.lockCalls = 0; window.unlockCalls = 0;
	  k.lock = (...a) => { window.lockCalls++; return lock(...a); };
	  k.unlock = () => { window.unlockCalls++; return unlock(); };
	  return 0;
	})()`); err != nil {
		t.Fatalf("no Keyboard Lock API in this Chromium: %v", err)
	}
	button, err := browsertest.Eval[[]float64](tab, `(() => { const b = document.getElementById("fullscreen").getBoundingClientRect(); return [b.x + b.width / 2, b.y + b.height / 2]; })()`)
	if err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(tab, chromedp.MouseClickXY(button[0], button[1])); err != nil {
		t.Fatal(err)
	}
	if err := browsertest.WaitTrue(tab, `document.fullscreenElement !== null && metal.keyboardLocked === true && window.lockCalls === 1`, 5*time.Second); err != nil {
		t.Fatalf("fullscreen with the keyboard locked: %v", err)
	}
	if _, err := browsertest.Eval[any](tab, `document.exitFullscreen(), 0`); err != nil {
		t.Fatal(err)
	}
	if err := browsertest.WaitTrue(tab, `document.fullscreenElement === null && metal.keyboardLocked === false && window.unlockCalls === 1`, 5*time.Second); err != nil {
		t.Fatalf("leaving fullscreen did not unlock the keyboard: %v", err)
	}
}
