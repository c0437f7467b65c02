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
// starts once the display and the audio sink are up, sees both but none of
// the streamer's secrets, and it and what it started in the background end
// when the streamer stops.
func TestDesktopRunsOnTheDisplayAndEndsWithTheStreamer(t *testing.T) {
	t.Setenv("METAL_TOKEN_KEY", "the-session-token-key-the-player-must-not-read")
	t.Setenv("NOMAD_TOKEN", "a-nomad-token")
	dir := t.TempDir()
	env, pids := filepath.Join(dir, "env"), filepath.Join(dir, "pids")
	// A window manager in the background and a terminal in front, as the
	// image's default does: both must go.
	r := startStreamer(t, func(c *Config) {
		c.Demo = false
		c.Desktop = `sleep 300 & echo $! > ` + pids + `; echo "$DISPLAY $PULSE_SERVER ${METAL_TOKEN_KEY:-none}${NOMAD_TOKEN:-none}" > ` + env + `; exec sleep 300`
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
	f := strings.Fields(got)
	if len(f) != 3 || f[0] != r.Display() || !strings.HasPrefix(f[1], "unix:") {
		t.Fatalf("the desktop saw %q, want DISPLAY %q and the streamer's sink", got, r.Display())
	}
	if f[2] != "nonenone" {
		t.Fatalf("the desktop can read the streamer's secrets: %q", f[2])
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
