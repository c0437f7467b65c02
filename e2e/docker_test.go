package e2e

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/metal-stream/metal/internal/browsertest"
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
	out, err := exec.Command("docker", "ps", "--format", "{{.ID}} {{.Image}}").Output()
	if err != nil {
		t.Fatalf("docker ps: %v", err)
	}
	got := map[string][]string{}
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		id, img, ok := strings.Cut(l, " ")
		if ok && (img == dockerImages[0] || img == dockerImages[1]) {
			got[img] = append(got[img], id)
		}
	}
	return got
}

// TestDevOnDockerPlaysADesktop runs `metal dev -driver docker` as a new
// user with Docker would: Nomad's docker driver runs TURN and the gateway
// from the metal image and the session from metal-desktop. Chromium plays
// relay-only, so the stream crosses the TURN container; the player sees the
// desktop (a window on it, not a black screen); every container reports
// healthy through the image's HEALTHCHECK; and Ctrl-C leaves no container.
func TestDevOnDockerPlaysADesktop(t *testing.T) {
	requireImages(t)
	if n := len(metalContainers(t)); n != 0 {
		t.Fatalf("%d containers of Metal's images already run; this test needs the engine to itself", n)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	cmd, stdout, stderr := startDev(t, ctx, "-driver", "docker", "-capacity", "1")
	defer func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	}()
	url := printedURL(ctx, stdout)
	if url == "" {
		t.Fatalf("metal dev -driver docker printed no URL; stderr:\n%s", stderr.String())
	}

	browser := browsertest.New(t)
	tab := browsertest.Stranger(t, browser)
	if err := chromedp.Do(tab, chromedp.Navigate(url+"#relay=1")); err != nil {
		t.Fatal(err)
	}
	if err := browsertest.WaitTrue(tab, `metal.stats && metal.stats.framesDecoded > 30`, 150*time.Second); err != nil {
		t.Fatalf("%v\nmetal dev:\n%s", err, stderr.String())
	}
	if typ := selectedCandidate(t, tab); typ != "relay" {
		t.Fatalf("selected local candidate type %q, want relay (through the TURN container)", typ)
	}

	// Which containers run: TURN and the gateway from metal, the session
	// from metal-desktop.
	running := metalContainers(t)
	if len(running["metal:dev"]) != 2 || len(running["metal-desktop:dev"]) != 1 {
		t.Fatalf("containers %v, want 2 of metal:dev (gateway, TURN) and 1 of metal-desktop:dev", running)
	}
	desk := running["metal-desktop:dev"][0]
	top, err := exec.Command("docker", "top", desk, "-o", "user,args").Output()
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
	const brightJS = `(() => {
	  const v = document.getElementById("video"), c = document.createElement("canvas");
	  c.width = 160; c.height = 90;
	  const x = c.getContext("2d"); x.drawImage(v, 0, 0, 160, 90);
	  const d = x.getImageData(0, 0, 160, 90).data;
	  let bright = 0, dark = 0;
	  for (let i = 0; i < d.length; i += 4) { const l = (d[i] + d[i+1] + d[i+2]) / 3; if (l > 200) bright++; else if (l < 60) dark++; }
	  return [bright / (160 * 90), dark / (160 * 90)];
	})()`
	var frac []float64
	deadline := time.Now().Add(30 * time.Second)
	for {
		frac, err = browsertest.Eval[[]float64](tab, brightJS)
		if err == nil && frac[0] > 0.05 && frac[1] > 0.2 {
			break
		}
		if time.Now().After(deadline) {
			browsertest.Screenshot(t, tab, "docker-desktop")
			t.Fatalf("the player sees no desktop: bright %.3f, dark %.3f of the frame (%v), want a window (> 5%% bright) on the root (> 20%% dark)", frac[0], frac[1], err)
		}
		time.Sleep(time.Second)
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
