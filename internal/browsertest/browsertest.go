// Package browsertest runs Debian's Chromium (headless, or with a window on
// a test's Xvfb) for tests through
// chromedp, set up for WebRTC on a loopback-only network, and can move a
// test binary into a network namespace of its own so that every packet stays
// on its private lo.
//
// Where Chromium is missing the tests skip, except under CI=true, where a
// missing browser fails the run.
package browsertest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// ChromiumPath is where Debian's chromium package installs the browser.
const ChromiumPath = "/usr/bin/chromium"

func chromium() (string, error) {
	if p := os.Getenv("METAL_CHROMIUM"); p != "" {
		return p, nil
	}
	if _, err := os.Stat(ChromiumPath); err == nil {
		return ChromiumPath, nil
	}
	return exec.LookPath("chromium")
}

// New starts a headless Chromium for the test and returns a context for its
// first tab; the browser stops when the test ends.
func New(t testing.TB) context.Context {
	t.Helper()
	return newBrowser(t)
}

// NewTrustingSelfSigned is New for a test whose server has a self-signed
// certificate (tests only: Chromium accepts any certificate).
func NewTrustingSelfSigned(t testing.TB) context.Context {
	t.Helper()
	return newBrowser(t, chromedp.Flag("ignore-certificate-errors", true))
}

// NewOnDisplay starts Chromium with a window (not headless) on the X
// display (an Xvfb the test started), full screen at w x h with no browser
// UI, so that what the page shows can be read back from the screen (the
// glass-to-glass benchmark). Its context is the browser's one tab: the tab
// in front, which Chromium keeps rendering.
func NewOnDisplay(t testing.TB, display string, w, h int) context.Context {
	t.Helper()
	return newBrowser(t,
		chromedp.Flag("headless", false),
		chromedp.Env("DISPLAY="+display),
		chromedp.Flag("ozone-platform", "x11"),
		chromedp.Flag("kiosk", true),
		chromedp.Flag("test-type", true),          // no "unsupported flag" bar over the page
		chromedp.Flag("enable-automation", false), // nor the "controlled by automated software" one
		chromedp.Flag("window-position", "0,0"),
		chromedp.WindowSize(w, h),
		chromedp.Flag("force-device-scale-factor", "1"),
	)
}

func newBrowser(t testing.TB, extra ...chromedp.ExecAllocatorOption) context.Context {
	t.Helper()
	path, err := chromium()
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("browsertest: CI=true and chromium is missing (apt-get install chromium): %v", err)
		}
		t.Skipf("browsertest: chromium missing (apt-get install chromium): %v", err)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 720),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("allow-loopback-in-peer-connection", true),
		chromedp.Flag("disable-features", "WebRtcHideLocalIpsWithMdns,Translate"),
		chromedp.Flag("autoplay-policy", "no-user-gesture-required"),
		chromedp.Flag("use-fake-ui-for-media-stream", true),
	)
	opts = append(opts, extra...)
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	// Start the browser now, on a context without a deadline.
	if err := chromedp.Do(ctx); err != nil {
		cancel()
		cancelA()
		t.Fatalf("browsertest: start chromium: %v", err)
	}
	t.Cleanup(func() { cancel(); cancelA() })
	return ctx
}

// Tab opens another tab in the same browser.
func Tab(t testing.TB, browser context.Context) context.Context {
	t.Helper()
	ctx, cancel := chromedp.NewContext(browser)
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("browsertest: new tab: %v", err)
	}
	t.Cleanup(cancel)
	return ctx
}

// Stranger opens a tab in a browser context of its own (like a separate
// browser profile: no shared cookies or local storage), so that two tabs
// are two different players.
func Stranger(t testing.TB, browser context.Context) context.Context {
	t.Helper()
	ctx, cancel := chromedp.NewContext(browser, chromedp.WithNewBrowserContext())
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("browsertest: new browser context: %v", err)
	}
	t.Cleanup(cancel)
	return ctx
}

// Eval evaluates a JavaScript expression in the tab, awaiting promises.
func Eval[T any](ctx context.Context, expr string) (T, error) {
	return chromedp.Run(ctx, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
}

// WaitTrue polls a boolean JavaScript expression until it is true or the
// timeout passes; the error says what the page last showed.
func WaitTrue(ctx context.Context, expr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var lastErr error
	for time.Now().Before(deadline) {
		c, cancel := context.WithTimeout(ctx, 5*time.Second)
		ok, err := Eval[bool](c, "(() => { try { return !!("+expr+"); } catch (e) { return false; } })()")
		cancel()
		if err == nil && ok {
			return nil
		}
		lastErr = err
		time.Sleep(100 * time.Millisecond)
	}
	status, _ := Eval[string](ctx, `JSON.stringify({status: window.metal && window.metal.status, error: window.metal && window.metal.error, stats: window.metal && window.metal.stats})`)
	return fmt.Errorf("timed out after %s waiting for %s (last error %v); page: %s", timeout, expr, lastErr, status)
}

// Screenshot saves the tab as name.png under $METAL_SCREENSHOT_DIR, when
// set, so a person can look at what a test saw.
func Screenshot(t testing.TB, tab context.Context, name string) {
	t.Helper()
	dir := os.Getenv("METAL_SCREENSHOT_DIR")
	if dir == "" {
		return
	}
	png, err := chromedp.Run(tab, chromedp.CaptureScreenshot())
	if err != nil {
		t.Logf("screenshot %s: %v", name, err)
		return
	}
	_ = os.MkdirAll(dir, 0o755)
	_ = os.WriteFile(filepath.Join(dir, name+".png"), png, 0o644)
}

// VideoLight reads the player's video element (id "video") at 160x90 and
// returns the share of bright (> 200) and dark (< 60) pixels: a desktop
// shows a window (bright) on its root (dark); a black screen is all dark.
func VideoLight(tab context.Context) (bright, dark float64, err error) {
	const js = `(() => {
	  const v = document.getElementById("video"), c = document.createElement("canvas");
	  c.width = 160; c.height = 90;
	  const x = c.getContext("2d"); x.drawImage(v, 0, 0, 160, 90);
	  const d = x.getImageData(0, 0, 160, 90).data;
	  let bright = 0, dark = 0;
	  for (let i = 0; i < d.length; i += 4) { const l = (d[i] + d[i+1] + d[i+2]) / 3; if (l > 200) bright++; else if (l < 60) dark++; }
	  return [bright / (160 * 90), dark / (160 * 90)];
	})()`
	f, err := Eval[[]float64](tab, js)
	if err != nil || len(f) != 2 {
		return 0, 0, fmt.Errorf("reading the video: %v", err)
	}
	return f[0], f[1], nil
}
