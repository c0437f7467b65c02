package streamer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/cdproto/input"
	"github.com/chromedp/chromedp"

	"github.com/metal-stream/metal/internal/browsertest"
	"github.com/metal-stream/metal/internal/token"
)

func TestClipAssembler(t *testing.T) {
	var a clipAssembler
	text := strings.Repeat("é🚀x", 20000) // 140 kB, multi-byte runes across chunk edges
	chunks := clipChunks(text)
	if len(chunks) < 2 {
		t.Fatalf("%d chunks", len(chunks))
	}
	for i, c := range chunks {
		if len(c)-1 > clipChunk || !utf8.ValidString(c) {
			t.Fatalf("chunk %d: %d bytes, valid %v", i, len(c)-1, utf8.ValidString(c))
		}
		got, done, err := a.add([]byte(c))
		if err != nil || done != (i == len(chunks)-1) {
			t.Fatalf("chunk %d: done %v err %v", i, done, err)
		}
		if done && got != text {
			t.Fatal("text changed on its way")
		}
	}
	// Over 1 MiB: refused at its last chunk, and the next text goes through.
	big := strings.Repeat("a", clipChunk)
	for i := 0; i <= MaxClipboard/clipChunk; i++ {
		if _, done, err := a.add([]byte("+" + big)); done || err != nil {
			t.Fatalf("chunk %d of an oversized text: done %v err %v", i, done, err)
		}
	}
	if _, done, err := a.add([]byte("=")); !done || !errors.Is(err, errClipboardTooLarge) {
		t.Fatalf("oversized text: done %v err %v", done, err)
	}
	if got, done, err := a.add([]byte("=ok")); !done || err != nil || got != "ok" {
		t.Fatalf("after an oversized text: %q %v %v", got, done, err)
	}
	for _, bad := range [][]byte{nil, []byte("xyz"), append([]byte("+"), make([]byte, clipChunk+1)...), []byte("=\xff\xfe")} {
		if _, _, err := a.add(bad); !errors.Is(err, ErrBadInput) {
			t.Errorf("%.10q: %v, want a bad-input error", bad, err)
		}
	}
	// A malformed chunk inside a text: the text is refused whole, once, at
	// its end.
	if _, done, err := a.add([]byte("+start ")); done || err != nil {
		t.Fatal(done, err)
	}
	if _, done, err := a.add([]byte("xyz")); done || err != nil {
		t.Fatalf("a malformed chunk inside a text: done %v err %v, want it answered at the end", done, err)
	}
	if got, done, err := a.add([]byte("=end")); !done || !errors.Is(err, ErrBadInput) || got != "" {
		t.Fatalf("a text with a malformed chunk: %q %v %v", got, done, err)
	}
	// A chunk refused on the way (the rate limit): the text is refused
	// whole at its end, never delivered with a hole.
	if _, done, err := a.add([]byte("+first half ")); done || err != nil {
		t.Fatal(done, err)
	}
	a.drop()
	if _, done, err := a.add([]byte("+after the hole")); done || err != nil {
		t.Fatal(done, err)
	}
	if got, done, err := a.add([]byte("=end")); !done || !errors.Is(err, ErrBadInput) || got != "" {
		t.Fatalf("a text with a dropped chunk: %q %v %v", got, done, err)
	}
	if got, done, err := a.add([]byte("=again")); !done || err != nil || got != "again" {
		t.Fatalf("after bad messages: %q %v %v", got, done, err)
	}
}

// xclipOut is a selection's text on display.
func xclipOut(display, sel string) string {
	cmd := exec.Command("xclip", "-selection", sel, "-out")
	cmd.Env = append(os.Environ(), "DISPLAY="+display)
	out, _ := cmd.Output()
	return string(out)
}

func xclipIn(t *testing.T, display, sel, text string) {
	t.Helper()
	cmd := exec.Command("xclip", "-selection", sel, "-in")
	cmd.Env = append(os.Environ(), "DISPLAY="+display)
	cmd.Stdin = strings.NewReader(text)
	if err := cmd.Run(); err != nil { // no output read: xclip's child would hold the pipe
		t.Fatalf("xclip -in: %v", err)
	}
}

// TestBrowserClipboardRoundTrips: text copied in the session reaches the
// browser's clipboard; the browser's clipboard reaches both X selections
// through a paste shortcut (the paste event, its keys typed after the
// session holds the text) and when the page gains focus (the async API);
// a 300 kB text goes through whole; over 1 MiB is refused and changes
// nothing; a spectator neither gets the session's text nor sets it.
func TestBrowserClipboardRoundTrips(t *testing.T) {
	r := startStreamer(t, func(c *Config) { c.Audio = false })
	b := browsertest.New(t)
	setup := []chromedp.Action[chromedp.Void]{
		chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			for _, name := range []string{"clipboard-read", "clipboard-write"} {
				if _, err := cdp.Call(ctx, tg, browser.SetPermission, browser.SetPermissionParams{
					Permission: &browser.PermissionDescriptor{Name: name, AllowWithoutSanitization: true},
					Setting:    browser.PermissionSettingGranted, Origin: r.URL(),
				}); err != nil {
					return fmt.Errorf("grant %s: %w", name, err)
				}
			}
			_, err := cdp.Call(ctx, tg, emulation.SetFocusEmulationEnabled, emulation.SetFocusEmulationEnabledParams{Enabled: true})
			return err
		}),
	}
	tab := ownerTab(t, b, r, setup...)
	if err := browsertest.WaitTrue(tab, `metal.state.cdc && metal.state.cdc.readyState === "open"`, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	display := r.Display()
	events := xEvents(t, display)

	// Session → browser.
	fromX := "copied in the session: ü ✓ " + fmt.Sprint(time.Now().UnixNano())
	xclipIn(t, display, "clipboard", fromX)
	if err := browsertest.WaitTrue(tab, fmt.Sprintf(`metal.clipboard === %q`, fromX), 10*time.Second); err != nil {
		t.Fatalf("the session's copy: %v", err)
	}
	if got, err := browsertest.Eval[string](tab, `navigator.clipboard.readText()`); err != nil || got != fromX {
		t.Fatalf("the browser's clipboard holds %q (%v), want %q", got, err, fromX)
	}

	// Browser → session through Ctrl+V: the text is in both selections,
	// and the paste keys reach the session after the streamer said so.
	fromBrowser := "pasted from the browser: é 🚀 " + fmt.Sprint(time.Now().UnixNano())
	if _, err := browsertest.Eval[any](tab, fmt.Sprintf(`navigator.clipboard.writeText(%q).then(() => 0)`, fromBrowser)); err != nil {
		t.Fatal(err)
	}
	acks, _ := browsertest.Eval[int](tab, `metal.clipboardAcks || 0`)
	if _, err := browsertest.Eval[any](tab, `metal.order = [], metal.onClipboard = (k) => metal.order.push("clipboard " + k), metal.onSend = (m) => { if (m.type === "key") metal.order.push("key " + m.keysym + " " + m.down); }, 0`); err != nil {
		t.Fatal(err)
	}
	key := func(typ input.DispatchKeyEventType, k, code string, vk int64, mod int64) chromedp.Action[chromedp.Void] {
		return keyAction(&input.DispatchKeyEventParams{Type: typ, Key: k, Code: code, WindowsVirtualKeyCode: vk, Modifiers: mod})
	}
	if err := chromedp.Do(tab,
		key(input.DispatchKeyEventTypeRawKeyDown, "Control", "ControlLeft", 17, 2),
		key(input.DispatchKeyEventTypeRawKeyDown, "v", "KeyV", 86, 2),
		key(input.DispatchKeyEventTypeKeyUp, "v", "KeyV", 86, 2),
		key(input.DispatchKeyEventTypeKeyUp, "Control", "ControlLeft", 17, 0),
	); err != nil {
		t.Fatal(err)
	}
	waitSelection := func(what, want string) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
			c, p := xclipOut(display, "clipboard"), xclipOut(display, "primary")
			if c == want && p == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: the session's CLIPBOARD holds %.60q, PRIMARY %.60q (%d and %d bytes), want %.60q (%d bytes)", what, c, p, len(c), len(p), want, len(want))
			}
		}
	}
	waitSelection("Ctrl+V", fromBrowser)
	if err := browsertest.WaitTrue(tab, fmt.Sprintf(`metal.clipboardAcks > %d && !metal.lastClipboardError`, acks), 5*time.Second); err != nil {
		t.Fatalf("no acknowledgement of the paste: %v", err)
	}
	// The streamer acknowledged the text before the V went to the
	// session: the application pastes the new text, not the old.
	order, _ := browsertest.Eval[[]string](tab, `metal.order`)
	ack, v := -1, -1
	for i, e := range order {
		if e == "clipboard ." && ack < 0 {
			ack = i
		}
		if e == "key 118 true" && v < 0 {
			v = i
		}
	}
	if ack < 0 || v < ack {
		t.Fatalf("the paste's V went to the session before the streamer held the text: %q", order)
	}
	waitX(t, "Ctrl+V typed in the session", func() bool {
		s := events.String()
		return strings.Contains(s, "(keysym 0x76, v)") && strings.Contains(s, "(keysym 0xffe3, Control_L)")
	})

	// A 300 kB text, whole, and the focus path: what the browser's
	// clipboard holds when the page gains focus.
	large := strings.Repeat("0123456789abcdefé🚀\n", 300<<10/24)
	if _, err := browsertest.Eval[any](tab, fmt.Sprintf(`navigator.clipboard.writeText(%q).then(() => window.dispatchEvent(new Event("focus"))).then(() => 0)`, large)); err != nil {
		t.Fatal(err)
	}
	waitSelection("a 300 kB text on focus", large)

	// Over 1 MiB: the page does not send it; sent anyway, the streamer
	// refuses it and the session keeps what it had.
	if sent, _ := browsertest.Eval[bool](tab, `metal.sendClipboard("x".repeat((1 << 20) + 1))`); sent {
		t.Fatal("the page sent a text over 1 MiB")
	}
	if _, err := browsertest.Eval[any](tab, `(() => { const c = "+" + "y".repeat(16384); for (let i = 0; i < 65; i++) metal.state.cdc.send(c); metal.state.cdc.send("="); return 0; })()`); err != nil {
		t.Fatal(err)
	}
	if err := browsertest.WaitTrue(tab, `(metal.lastClipboardError || "").includes("over 1048576 bytes")`, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := browsertest.Eval[any](tab, `metal.state.cdc.send("not framed"), 0`); err != nil {
		t.Fatal(err)
	}
	if err := browsertest.WaitTrue(tab, `(metal.lastClipboardError || "").includes("must start with")`, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if c := xclipOut(display, "clipboard"); c != large {
		t.Fatalf("refused texts changed the session's clipboard to %d bytes", len(c))
	}

	// A spectator: its clipboard channel is closed, the session's copies
	// do not reach it, and it sets nothing.
	viewer := browsertest.Tab(t, b)
	if err := chromedp.Do(viewer, chromedp.EmulateViewport(1280, 720), chromedp.Navigate(r.playerURL(t, token.RoleViewer))); err != nil {
		t.Fatal(err)
	}
	waitPlaying(t, viewer, 1280, 720)
	if err := browsertest.WaitTrue(viewer, `metal.state.cdc && metal.state.cdc.readyState === "closed"`, 10*time.Second); err != nil {
		t.Fatalf("the spectator's clipboard channel: %v", err)
	}
	again := "copied again " + fmt.Sprint(time.Now().UnixNano())
	xclipIn(t, display, "clipboard", again)
	if err := browsertest.WaitTrue(tab, fmt.Sprintf(`metal.clipboard === %q`, again), 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if got, _ := browsertest.Eval[string](viewer, `String(metal.clipboard)`); got != "undefined" {
		t.Fatalf("the spectator got the session's clipboard: %.40q", got)
	}
	if c := xclipOut(display, "clipboard"); !bytes.Equal([]byte(c), []byte(again)) {
		t.Fatalf("the session's clipboard is %.40q", c)
	}
}
