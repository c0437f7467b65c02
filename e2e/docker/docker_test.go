package docker

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/metal-stream/metal/internal/browsertest"
	"github.com/metal-stream/metal/internal/devproc"
	"github.com/metal-stream/metal/internal/localcluster/clustertest"
)

// dockerImages are what `make images` (tools/images.sh) builds.
var dockerImages = []string{"metal:dev", "metal-desktop:dev"}

// requireImages fails the test (skips it outside CI) when the Docker
// engine or Metal's images are missing.
func requireImages(t *testing.T) {
	t.Helper()
	for _, img := range dockerImages {
		if err := exec.Command("docker", "image", "inspect", img).Run(); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("image %s missing (make images): %v", img, err)
			}
			t.Skipf("image %s missing (make images): %v", img, err)
		}
	}
}

// metalContainers lists the running containers of Metal's images: image
// name to container ids.
func metalContainers(t *testing.T) map[string][]string {
	t.Helper()
	// Not the edge test's containers (same image, labelled): only what
	// Nomad's docker driver runs.
	out, err := exec.Command("docker", "ps", "--format", `{{.ID}} {{.Image}} {{.Label "metal-e2e"}}`).Output()
	if err != nil {
		t.Fatalf("docker ps: %v", err)
	}
	got := map[string][]string{}
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(l)
		if len(f) == 2 && (f[1] == dockerImages[0] || f[1] == dockerImages[1]) {
			id, img := f[0], f[1]
			got[img] = append(got[img], id)
		}
	}
	return got
}

// startDev builds metal from source and starts `metal dev` with the
// test's agent binaries on any free gateway port; it returns the player URL
// it printed ("" if none within ctx).
func startDev(t *testing.T, ctx context.Context, extra ...string) (*devproc.Dev, string) {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "metal")
	if out, err := exec.Command("go", "build", "-o", bin, "../../cmd/metal").CombinedOutput(); err != nil {
		t.Fatalf("build metal: %v\n%s", err, out)
	}
	nomadBin, consulBin := clustertest.Binaries(t)
	dev, err := devproc.Start(bin, nomadBin, consulBin, extra...)
	if err != nil {
		t.Fatal(err)
	}
	return dev, dev.URL(ctx)
}

// TestDevOnDockerPlaysADesktop runs `metal dev -driver docker` as a new
// user with Docker would: Nomad's docker driver runs TURN and the gateway
// from the metal image and the session from metal-desktop. Chromium plays
// through the gateway container, having measured its edge through the TURN
// container; the player sees the desktop (a window on it, not a black
// screen); every container reports healthy through the image's
// HEALTHCHECK; and Ctrl-C leaves no container.
func TestDevOnDockerPlaysADesktop(t *testing.T) {
	requireImages(t)
	if n := len(metalContainers(t)); n != 0 {
		t.Fatalf("%d containers of Metal's images already run; this test needs the engine to itself", n)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	dev, url := startDev(t, ctx, "-driver", "docker", "-capacity", "1")
	cmd, stderr := dev.Cmd, dev.Stderr
	defer func() {
		// On a failure too, metal dev stops the way a user stops it
		// (Ctrl-C), so that Nomad stops the containers: a killed Nomad
		// client leaves them running. Any left then are this test's, and
		// go by id.
		dev.Stop()
		for _, ids := range metalContainers(t) {
			for _, id := range ids {
				t.Errorf("container %s left behind; removing it", id)
				_ = exec.Command("docker", "rm", "-f", id).Run()
			}
		}
	}()
	if url == "" {
		t.Fatalf("metal dev -driver docker printed no URL; stderr:\n%s", stderr.String())
	}

	browser := browsertest.New(t)
	tab := browsertest.Stranger(t, browser)
	if err := chromedp.Do(tab, chromedp.Navigate(url)); err != nil {
		t.Fatal(err)
	}
	if err := browsertest.WaitTrue(tab, `metal.stats && metal.stats.framesDecoded > 30`, 150*time.Second); err != nil {
		t.Fatalf("%v\nmetal dev:\n%s", err, stderr.String())
	}
	// The page measured its RTT to the edge through the TURN container's
	// probe, and offers it as its relay. (Media is not relayed here: TURN
	// refuses loopback peers, by design, and everything metal dev runs is
	// on 127.0.0.1; the relayed path is the e2e package's, in its
	// namespace, with the same binary.)
	if err := browsertest.WaitTrue(tab, `metal.rtt && Object.values(metal.rtt).some((v) => v > 0)`, 10*time.Second); err != nil {
		dbg, _ := browsertest.Eval[string](tab, `fetch("/v1/edges").then((r) => r.text()).then((e) => JSON.stringify({edges: e, rtt: metal.rtt}))`)
		t.Fatalf("no RTT measured to the TURN container: %v; %s", err, dbg)
	}

	// Which containers run: TURN and the gateway from metal, the session
	// from metal-desktop.
	running := metalContainers(t)
	if len(running["metal:dev"]) != 2 || len(running["metal-desktop:dev"]) != 1 {
		t.Fatalf("containers %v, want 2 of metal:dev (gateway, TURN) and 1 of metal-desktop:dev", running)
	}
	desk := running["metal-desktop:dev"][0]
	top, err := exec.Command("docker", "top", desk, "aux").Output() // ps aux: USER first, the command last
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Xvfb", "openbox", "xterm", "metal streamer"} {
		if !strings.Contains(string(top), want) {
			t.Fatalf("the desktop container runs no %s:\n%s", want, top)
		}
	}
	if strings.Contains(string(top), "\nroot ") {
		t.Fatalf("a process in the desktop container runs as root:\n%s", top)
	}

	// The player sees a desktop: the xterm's white window on the dark
	// root, not a uniform frame.
	var frac [2]float64
	deadline := time.Now().Add(30 * time.Second)
	for {
		frac[0], frac[1], err = browsertest.VideoLight(tab)
		if err == nil && frac[0] > 0.05 && frac[1] > 0.2 {
			break
		}
		if time.Now().After(deadline) {
			browsertest.Screenshot(t, tab, "docker-desktop")
			ps, _ := exec.Command("docker", "exec", desk, "sh", "-c", "ps -eo pid,stat,args; for p in $(pgrep xterm) $(pgrep openbox); do echo \"== $p\"; tr '\\0' '\\n' < /proc/$p/environ | grep -E 'DISPLAY|HOME'; done").CombinedOutput()
			logs, _ := exec.Command("docker", "logs", "--tail", "40", desk).CombinedOutput()
			t.Fatalf("the player sees no desktop: bright %.3f, dark %.3f of the frame (%v), want a window (> 5%% bright) on the root (> 20%% dark)\nin the desktop container:\n%s\nits log:\n%s", frac[0], frac[1], err, ps, logs)
		}
		time.Sleep(time.Second)
	}

	// In the container too, the screen follows the browser window (RandR
	// on the image's Xvfb), and a copy in the session reaches the browser
	// (the image's xclip; its output is not read: xclip's child keeps it).
	if err := chromedp.Do(tab, chromedp.EmulateViewport(1000, 600)); err != nil {
		t.Fatal(err)
	}
	if err := browsertest.WaitTrue(tab, `document.getElementById("video").videoWidth === 1000 && document.getElementById("video").videoHeight === 600`, 30*time.Second); err != nil {
		logs, _ := exec.Command("docker", "logs", "--tail", "40", desk).CombinedOutput()
		t.Fatalf("the video after the window changed: %v\nthe desktop container's log:\n%s", err, logs)
	}
	copied := fmt.Sprintf("copied in the container %d", time.Now().UnixNano())
	if out, err := exec.Command("docker", "exec", desk, "sh", "-c",
		`d=$(ls /tmp/.X11-unix | sed -n 's/^X/:/p' | head -1); printf %s "$1" | DISPLAY=$d xclip -selection clipboard -in >/dev/null 2>&1`, "sh", copied).CombinedOutput(); err != nil {
		t.Fatalf("xclip in the desktop container: %v: %s", err, out)
	}
	if err := browsertest.WaitTrue(tab, fmt.Sprintf(`metal.clipboard === %q`, copied), 20*time.Second); err != nil {
		t.Fatalf("the container's copy did not reach the browser: %v", err)
	}

	// Docker's view of each container's HEALTHCHECK.
	deadline = time.Now().Add(60 * time.Second)
	for _, ids := range running {
		for _, id := range ids {
			for {
				out, _ := exec.Command("docker", "inspect", "-f", "{{.State.Health.Status}}", id).Output()
				if s := strings.TrimSpace(string(out)); s == "healthy" {
					break
				} else if time.Now().After(deadline) {
					t.Fatalf("container %s health %q, want healthy", id, s)
				}
				time.Sleep(time.Second)
			}
		}
	}

	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("metal dev exit: %v\n%s", err, stderr.String())
	}
	if left := metalContainers(t); len(left) != 0 {
		t.Fatalf("containers left after Ctrl-C: %v", left)
	}
}
