package streamer

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/metal-stream/metal/internal/browsertest"
	"github.com/metal-stream/metal/internal/token"
	"github.com/metal-stream/metal/streamer/internal/uinput"
)

func TestPadKeys(t *testing.T) {
	b := make([]float64, 17)
	if k := padKeys(b, []float64{0.4, -0.4, 1, 1}); len(k) != 0 {
		t.Fatalf("a stick inside the dead zone (and the right stick) hold %v", k)
	}
	if k := padKeys(b, []float64{1, -1, 0, 0}); !k[0xff53] || !k[0xff52] || len(k) != 2 {
		t.Fatalf("left stick right and up: %v", k)
	}
	b[0], b[14] = 1, 1
	if k := padKeys(b, nil); !k[0xff0d] || !k[0xff51] || len(k) != 2 {
		t.Fatalf("A and D-pad left: %v", k)
	}
	if k := padKeys(nil, nil); len(k) != 0 {
		t.Fatalf("a pad that went away holds %v", k)
	}
}

func TestParsePad(t *testing.T) {
	for msg, want := range map[string]string{
		`{"type":"pad","index":0,"buttons":[1,0.5],"axes":[-1,0.25]}`: "",
		`{"type":"pad","index":0,"buttons":[],"axes":[]}`:             "",
		`{"type":"pad","index":4,"buttons":[],"axes":[]}`:             "pad 4 not 0..3",
		`{"type":"pad","index":0,"buttons":[2],"axes":[]}`:            "outside 0..1",
		`{"type":"pad","index":0,"buttons":[],"axes":[-1.5]}`:         "outside -1..1",
		`{"type":"pad","index":0,"buttons":[],"axes":[0,0,0,0,0]}`:    "at most 17 and 4",
		`{"type":"pad","index":0,"axes":[]}`:                          `missing "buttons"`,
	} {
		_, err := ParseInput([]byte(msg))
		if (want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), want)) {
			t.Errorf("%s: %v, want %q", msg, err, want)
		}
	}
}

// TestGamepadModes: auto takes uinput only where /dev/uinput is writable,
// and uinput refuses to start without it, naming the way out.
func TestGamepadModes(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	f, statErr := os.OpenFile(uinput.Path, os.O_WRONLY, 0) // what auto tries
	if statErr == nil {
		f.Close()
	}
	sink, err := newPadSink(GamepadAuto, "s", &recorder{}, log)
	if err != nil {
		t.Fatal(err)
	}
	if want := map[bool]string{true: GamepadKeys, false: GamepadUinput}[statErr != nil]; sink.Mode() != want {
		t.Fatalf("auto chose %s with %s %v", sink.Mode(), uinput.Path, statErr)
	}
	sink.Close()
	if statErr != nil {
		if _, err := newPadSink(GamepadUinput, "s", &recorder{}, log); err == nil || !strings.Contains(err.Error(), "-gamepad keys") {
			t.Fatalf("uinput without %s: %v", uinput.Path, err)
		}
	}
	if sink, err := newPadSink(GamepadOff, "s", &recorder{}, log); sink != nil || err != nil {
		t.Fatalf("off: %v %v", sink, err)
	}
}

// scriptedPad replaces the browser's Gamepad API with one standard pad
// whose state the test sets (window.testPad), and announces it.
const scriptedPad = `(() => {
	const pad = { id: "Metal scripted pad (STANDARD GAMEPAD)", index: 0, connected: true, mapping: "standard", timestamp: 0,
		axes: [0, 0, 0, 0], buttons: Array.from({ length: 17 }, () => ({ pressed: false, touched: false, value: 0 })) };
	window.testPad = pad;
	Object.defineProperty(navigator, "getGamepads", { configurable: true, value: () => [pad, null, null, null] });
	window.dispatchEvent(new Event("gamepadconnected"));
	return 0;
})()`

// TestBrowserGamepadReachesTheSession: a gamepad scripted in Chromium
// (its Gamepad API) moves the session: here, without uinput, as keys
// (the left stick right holds Right, A holds Return); what the pad held is
// let go when the player goes; a spectator's pad is refused.
func TestBrowserGamepadReachesTheSession(t *testing.T) {
	r := startStreamer(t, func(c *Config) { c.Audio, c.Gamepad = false, GamepadKeys })
	if r.pads == nil || r.pads.Mode() != GamepadKeys {
		t.Fatalf("gamepads: %v", r.pads)
	}
	b := browsertest.New(t)
	tab := ownerTab(t, b, r)
	xd := openX(t, r.Display())
	if err := browsertest.WaitTrue(tab, `metal.screen && metal.screen.owner`, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := browsertest.Eval[any](tab, scriptedPad); err != nil {
		t.Fatal(err)
	}
	const right, ret = 0xff53, 0xff0d
	set := func(js string) {
		t.Helper()
		if _, err := browsertest.Eval[any](tab, js+", 0"); err != nil {
			t.Fatal(err)
		}
	}
	set(`testPad.axes[0] = 0.9`)
	waitX(t, "Right held by the stick", func() bool { return xd.KeyDown(right) })
	set(`testPad.axes[0] = 0.1`)
	waitX(t, "Right released in the dead zone", func() bool { return !xd.KeyDown(right) })
	set(`testPad.buttons[0] = { pressed: true, touched: true, value: 1 }`)
	waitX(t, "Return held by A", func() bool { return xd.KeyDown(ret) })
	set(`testPad.buttons[0] = { pressed: false, touched: false, value: 0 }`)
	waitX(t, "Return released", func() bool { return !xd.KeyDown(ret) })

	// Bad pad messages are refused.
	set(`metal.send({type: "pad", index: 0, buttons: [], axes: [3]})`)
	if err := browsertest.WaitTrue(tab, `(metal.lastInputError || "").includes("outside -1..1")`, 5*time.Second); err != nil {
		t.Fatal(err)
	}

	// A spectator's pad moves nothing.
	viewer := browsertest.Tab(t, b)
	if err := chromedp.Do(viewer, chromedp.EmulateViewport(1280, 720), chromedp.Navigate(r.playerURL(t, token.RoleViewer))); err != nil {
		t.Fatal(err)
	}
	if err := browsertest.WaitTrue(viewer, `metal.screen && !metal.screen.owner && metal.state.dc.readyState === "open"`, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := browsertest.Eval[any](viewer, `metal.send({type: "pad", index: 1, buttons: [1], axes: []}), 0`); err != nil {
		t.Fatal(err)
	}
	if err := browsertest.WaitTrue(viewer, `(metal.lastInputError || "").includes("view-only")`, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if xd.KeyDown(ret) {
		t.Fatal("a spectator's pad pressed Return")
	}

	// Held when the player goes: let go.
	set(`testPad.axes[0] = 1`)
	waitX(t, "Right held again", func() bool { return xd.KeyDown(right) })
	// The connection drops with the stick held (the page lets go of what
	// it holds when it is hidden or loses focus: not here, so the release
	// is the streamer's).
	if _, err := browsertest.Eval[any](tab, `metal.stop(), 0`); err != nil {
		t.Fatal(err)
	}
	waitX(t, fmt.Sprintf("Right released when the player left (%d peers)", r.peerCount()), func() bool { return !xd.KeyDown(right) })
}
