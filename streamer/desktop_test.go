package streamer

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestDesktopRunsOnTheDisplayAndEndsWithTheStreamer: the desktop command
// starts once the display and the audio sink are up, sees both, and it
// and what it started in the background end when the streamer stops.
func TestDesktopRunsOnTheDisplayAndEndsWithTheStreamer(t *testing.T) {
	dir := t.TempDir()
	env, pids := filepath.Join(dir, "env"), filepath.Join(dir, "pids")
	// A window manager in the background and a terminal in front, as the
	// image's default does: both must go.
	r := startStreamer(t, func(c *Config) {
		c.Demo = false
		c.Desktop = `sleep 300 & echo $! > ` + pids + `; echo "$DISPLAY $PULSE_SERVER" > ` + env + `; exec sleep 300`
	})
	var got string
	deadline := time.Now().Add(10 * time.Second)
	for got == "" || !strings.Contains(got, " ") {
		b, _ := os.ReadFile(env)
		got = strings.TrimSpace(string(b))
		if time.Now().After(deadline) {
			t.Fatalf("the desktop command did not run (env file %q)", got)
		}
		time.Sleep(50 * time.Millisecond)
	}
	display, pulse, _ := strings.Cut(got, " ")
	if display != r.Display() || !strings.HasPrefix(pulse, "unix:") {
		t.Fatalf("the desktop saw DISPLAY=%q PULSE_SERVER=%q, want %q and the streamer's sink", display, pulse, r.Display())
	}
	b, err := os.ReadFile(pids)
	if err != nil {
		t.Fatal(err)
	}
	bg, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	if syscall.Kill(bg, 0) != nil {
		t.Fatalf("the desktop's background process %d is not running", bg)
	}
	r.cancel()
	select {
	case err := <-r.done:
		r.done <- err
	case <-time.After(30 * time.Second):
		t.Fatal("streamer did not stop")
	}
	for deadline := time.Now().Add(5 * time.Second); syscall.Kill(bg, 0) == nil; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the desktop's background process %d outlived the streamer", bg)
		}
	}
}
