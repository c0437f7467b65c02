package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	consul "github.com/hashicorp/consul/api"
	nomad "github.com/hashicorp/nomad/api"

	"github.com/metal-stream/metal/internal/browsertest"
	"github.com/metal-stream/metal/internal/devproc"
	"github.com/metal-stream/metal/internal/localcluster"

	"github.com/metal-stream/metal/internal/localcluster/clustertest"
)

// TestDevPrintsAWorkingURLAndCleansUp runs `metal dev` as a user would: it
// must print a player URL that answers, play to two strangers at once, and
// on Ctrl-C (SIGINT) leave no agent, no task and no directory behind.
func TestDevPrintsAWorkingURLAndCleansUp(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	dev := startDev(t)
	defer dev.Stop()
	cmd, stderr := dev.Cmd, dev.Stderr

	url := dev.URL(ctx)
	if url == "" {
		t.Fatalf("metal dev printed no URL; stderr:\n%s", stderr.String())
	}

	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), "Metal") {
		t.Fatalf("GET %s = %d %q", url, resp.StatusCode, body)
	}
	resp, err = http.Get(strings.TrimSuffix(url, "/") + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("gateway not ready under metal dev: %d", resp.StatusCode)
	}

	// Two players at once, as two strangers opening the printed URL: both
	// must decode frames (the streamer's reservation lets Nomad place two
	// 720p30 streams on a 2-core machine), on two different sessions.
	browser := browsertest.New(t)
	tabs := []context.Context{browsertest.Stranger(t, browser), browsertest.Stranger(t, browser)}
	var wg sync.WaitGroup
	errs := make([]error, len(tabs))
	playing := make([]time.Time, len(tabs))
	for i, tab := range tabs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if errs[i] = chromedp.Do(tab, chromedp.Navigate(url)); errs[i] == nil {
				errs[i] = browsertest.WaitTrue(tab, `metal.stats && metal.stats.framesDecoded > 30`, 120*time.Second)
				playing[i] = time.Now()
			}
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("player %d of 2 on the metal dev URL: %v\nmetal dev:\n%s", i+1, err, stderr.String())
		}
	}
	// Both play, and close together: a second player who waits for the
	// first one's session to be reaped (the old failure: 87 s) fails here.
	if gap := playing[1].Sub(playing[0]).Abs(); gap > 20*time.Second {
		t.Fatalf("the two players started playing %s apart, want within a few seconds of each other", gap.Round(time.Second))
	}
	if a, b := sessionOf(t, tabs[0]), sessionOf(t, tabs[1]); a == b || a == "" {
		t.Fatalf("two strangers share session %q", a)
	}

	checkDevDesktop(t, tabs[0], func() string {
		m := devAddrRE.FindStringSubmatch(stderr.String())
		if m == nil {
			return "(no Nomad address in metal dev's log)"
		}
		nc, err := nomad.NewClient(&nomad.Config{Address: m[2]})
		if err != nil {
			return err.Error()
		}
		return localcluster.TaskLogs(nc, "metal-session-"+sessionOf(t, tabs[0]), "")
	})

	pids := agentPIDs(stderr.String())
	if len(pids) != 2 {
		t.Fatalf("want consul and nomad pids in the log, got %v:\n%s", pids, stderr.String())
	}
	gatewayPID := listenerPID(t, url)

	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("metal dev exit: %v\n%s", err, stderr.String())
	}
	for _, pid := range append(pids, gatewayPID) {
		if pid != 0 && syscall.Kill(pid, 0) == nil {
			t.Errorf("pid %d still running after Ctrl-C", pid)
		}
	}
	if _, err := http.Get(url); err == nil {
		t.Errorf("gateway still answers after Ctrl-C")
	}
	if !strings.Contains(stderr.String(), "nothing left running") {
		t.Errorf("no clean stop reported:\n%s", stderr.String())
	}
}

var pidRE = regexp.MustCompile(`(?:consul|nomad) ready.* pid=(\d+)`)

func agentPIDs(log string) []int {
	var pids []int
	for _, m := range pidRE.FindAllStringSubmatch(log, -1) {
		n, _ := strconv.Atoi(m[1])
		pids = append(pids, n)
	}
	return pids
}

// listenerPID finds the process serving url's port, through /proc.
func listenerPID(t *testing.T, url string) int {
	t.Helper()
	port := url[strings.LastIndex(url, ":")+1:]
	port = strings.TrimSuffix(port, "/")
	n, _ := strconv.Atoi(port)
	inode := ""
	b, _ := os.ReadFile("/proc/net/tcp")
	for _, line := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) > 9 && strings.HasSuffix(f[1], ":"+strings.ToUpper(strconv.FormatInt(int64(n), 16))) && f[3] == "0A" {
			inode = f[9]
		}
	}
	if inode == "" {
		return 0
	}
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil {
			continue
		}
		fds, _ := os.ReadDir("/proc/" + p.Name() + "/fd")
		for _, fd := range fds {
			if l, _ := os.Readlink("/proc/" + p.Name() + "/fd/" + fd.Name()); l == "socket:["+inode+"]" {
				return pid
			}
		}
	}
	return 0
}

var devAddrRE = regexp.MustCompile(`Consul (http://\S+), Nomad (http://\S+)`)

// TestDevGatewaysKilledOneByOne runs `metal dev -gateways 3` (the gateway
// job at count 3 behind the local load balancer) and plays; then the
// leading gateway, and after it another, are killed with SIGKILL: the
// player keeps decoding, on the same session, and its status still
// answers through the balancer.
func TestDevGatewaysKilledOneByOne(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	dev := startDev(t, "-gateways", "3")
	defer dev.Stop()
	stderr := dev.Stderr
	url := dev.URL(ctx)
	m := devAddrRE.FindStringSubmatch(stderr.String())
	if url == "" || m == nil {
		t.Fatalf("metal dev printed no URL or agent addresses; stderr:\n%s", stderr.String())
	}
	ccfg := consul.DefaultConfig()
	ccfg.Address = strings.TrimPrefix(m[1], "http://")
	cc, err := consul.NewClient(ccfg)
	if err != nil {
		t.Fatal(err)
	}
	// gateways lists the passing gateway instances: base URL and leader.
	gateways := func() (urls []string, leader int) {
		entries, _, err := cc.Health().Service("metal-gateway", "", true, nil)
		if err != nil {
			t.Fatal(err)
		}
		leader = -1
		for i, e := range entries {
			u := fmt.Sprintf("http://%s:%d", e.Service.Address, e.Service.Port)
			urls = append(urls, u)
			g := &gatewayProc{url: u}
			if l, _ := g.leads(); l {
				leader = i
			}
		}
		return urls, leader
	}
	deadline := time.Now().Add(90 * time.Second)
	for {
		if urls, leader := gateways(); len(urls) == 3 && leader >= 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("three passing gateways with a leader not within 90 s:\n%s", stderr.String())
		}
		time.Sleep(200 * time.Millisecond)
	}

	browser := browsertest.New(t)
	tab := browsertest.Stranger(t, browser)
	if err := chromedp.Do(tab, chromedp.Navigate(url)); err != nil {
		t.Fatal(err)
	}
	if err := browsertest.WaitTrue(tab, `metal.stats && metal.stats.framesDecoded > 30`, 120*time.Second); err != nil {
		t.Fatalf("%v\nmetal dev:\n%s", err, stderr.String())
	}
	id := sessionOf(t, tab)
	for round := range 2 {
		urls, leader := gateways()
		victim := leader
		if victim < 0 || round == 1 {
			victim = (max(leader, 0) + 1) % len(urls)
		}
		pid := listenerPID(t, urls[victim])
		if pid == 0 {
			t.Fatalf("no process serves %s", urls[victim])
		}
		before := framesOf(t, tab)
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		t.Logf("killed gateway %s (pid %d, leader %v)", urls[victim], pid, victim == leader)
		time.Sleep(5 * time.Second)
		after := framesOf(t, tab)
		if after < before+60 {
			t.Fatalf("round %d: %d frames in the 5 s after killing a gateway, want 60 or more", round, after-before)
		}
		if got := sessionOf(t, tab); got != id {
			t.Fatalf("round %d: the player moved from session %s to %q", round, id, got)
		}
		if code := fetchFrom(t, tab, "GET", "/v1/sessions/"+id); code != 200 {
			t.Fatalf("round %d: status through the balancer = %d", round, code)
		}
	}
}

// startDev starts `metal dev` (the test's build) on any free gateway port
// with the test's agent binaries, as a user would; extra flags follow.
func startDev(t *testing.T, extra ...string) *devproc.Dev {
	t.Helper()
	nomadBin, consulBin := clustertest.Binaries(t)
	dev, err := devproc.Start(metalBinary(t), nomadBin, consulBin, extra...)
	if err != nil {
		t.Fatal(err)
	}
	return dev
}

// checkDevDesktop: the player of `make dev` sees a desktop (the xterm's
// white window on the dark root, not the demo scene) that follows the
// browser window's size, clicks into the
// terminal and types a command that runs, and GL programs have Mesa's
// llvmpipe on the session's display.
func checkDevDesktop(t *testing.T, tab context.Context, streamerLog func() string) {
	t.Helper()
	var frac [2]float64
	var err error
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(time.Second) {
		frac[0], frac[1], err = browsertest.VideoLight(tab)
		if err == nil && frac[0] > 0.05 && frac[1] > 0.2 {
			break
		}
		if time.Now().After(deadline) {
			browsertest.Screenshot(t, tab, "dev-desktop")
			t.Fatalf("the player sees no desktop: bright %.3f, dark %.3f of the frame (%v), want a window (> 5%% bright) on the root (> 20%% dark)\n%s\nthe streamer:\n%s", frac[0], frac[1], err, desktopDiagnosis(tab, streamerLog()), streamerLog())
		}
	}
	// The session's display, from its streamer's log.
	m := regexp.MustCompile(`msg="started Xvfb".* display=(:[0-9]+)`).FindStringSubmatch(streamerLog())
	if m == nil {
		t.Fatalf("no display in the streamer's log:\n%s", streamerLog())
	}
	display := m[1]
	// The desktop follows the browser window: a smaller window makes the X
	// screen (RandR) and the video that size.
	if err := chromedp.Do(tab, chromedp.EmulateViewport(1100, 640)); err != nil {
		t.Fatal(err)
	}
	rootW, rootH := 0.0, 0.0
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		root, err := exec.Command("xwininfo", "-display", display, "-root").Output()
		if err == nil {
			w := regexp.MustCompile(`Width:\s+([0-9]+)`).FindSubmatch(root)
			h := regexp.MustCompile(`Height:\s+([0-9]+)`).FindSubmatch(root)
			if w != nil && h != nil {
				rootW, _ = strconv.ParseFloat(string(w[1]), 64)
				rootH, _ = strconv.ParseFloat(string(h[1]), 64)
			}
		}
		if rootW == 1100 && rootH == 640 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a 1100x640 browser window: the session's X screen is %.0fx%.0f (%v)\nthe streamer:\n%s", rootW, rootH, err, streamerLog())
		}
	}
	if err := browsertest.WaitTrue(tab, `document.getElementById("video").videoWidth === 1100 && document.getElementById("video").videoHeight === 640`, 20*time.Second); err != nil {
		t.Fatalf("the video after the window changed: %v", err)
	}
	// Click into the terminal, where openbox put it, then type a command
	// as the player's keyboard would.
	info, err := exec.Command("xwininfo", "-display", display, "-name", "xterm").Output()
	if err != nil {
		t.Fatalf("xwininfo -name xterm on %s: %v", display, err)
	}
	geom := func(field string) float64 {
		m := regexp.MustCompile(field + `:\s+(-?[0-9]+)`).FindSubmatch(info)
		if m == nil {
			t.Fatalf("xwininfo says no %q:\n%s", field, info)
		}
		v, _ := strconv.ParseFloat(string(m[1]), 64)
		return v
	}
	cx, cy := (geom("Absolute upper-left X")+geom("Width")/2)/rootW, (geom("Absolute upper-left Y")+geom("Height")/2)/rootH
	marker := fmt.Sprintf("/tmp/metaldevtyped%d", time.Now().UnixNano())
	t.Cleanup(func() { _ = os.Remove(marker) })
	// The shell may not be reading yet when its window shows (typeahead
	// before readline starts is dropped), so the command is typed again
	// until it has run: touch is idempotent.
	for try := 1; ; try++ {
		if _, err := browsertest.Eval[any](tab, `(() => { metal.send({type: "move", x: `+strconv.FormatFloat(cx, 'f', 4, 64)+`, y: `+strconv.FormatFloat(cy, 'f', 4, 64)+`}); metal.send({type: "button", button: 1, down: true}); metal.send({type: "button", button: 1, down: false}); return true; })()`); err != nil {
			t.Fatal(err)
		}
		if err := chromedp.Do(tab, chromedp.KeyEvent("touch "+marker+"\r")); err != nil {
			t.Fatal(err)
		}
		created := false
		for deadline := time.Now().Add(4 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
			if _, err := os.Stat(marker); err == nil {
				created = true
				break
			}
		}
		if created {
			break
		}
		if try == 5 {
			browsertest.Screenshot(t, tab, "dev-typing")
			t.Fatalf("typed %q into the desktop's terminal 5 times; %s was not created\nthe streamer:\n%s", "touch "+marker, marker, streamerLog())
		}
	}
	// GL on the session's display.
	gl, err := exec.Command("glxinfo", "-B", "-display", display).CombinedOutput()
	if err != nil || !strings.Contains(string(gl), "llvmpipe") {
		t.Fatalf("glxinfo on the session's display %s: %v\n%s", display, err, gl)
	}
}

// desktopDiagnosis says, for a black desktop, whether the X screen itself
// shows a window (xwd of the root: the share of bright bytes) and whether
// the player's video still advances.
func desktopDiagnosis(tab context.Context, log string) string {
	var b strings.Builder
	if m := regexp.MustCompile(`msg="started Xvfb".* display=(:[0-9]+)`).FindStringSubmatch(log); m != nil {
		if img, err := exec.Command("xwd", "-root", "-silent", "-display", m[1]).Output(); err == nil && len(img) > 8 {
			header := int(img[0])<<24 | int(img[1])<<16 | int(img[2])<<8 | int(img[3])
			bright := 0
			px := img[min(header, len(img)):]
			for _, v := range px {
				if v > 200 {
					bright++
				}
			}
			fmt.Fprintf(&b, "X screen %s: %.3f of its bytes bright\n", m[1], float64(bright)/float64(max(1, len(px))))
		} else {
			fmt.Fprintf(&b, "xwd %s: %v\n", m[1], err)
		}
	}
	f1, _ := browsertest.Eval[float64](tab, `metal.stats ? metal.stats.framesDecoded : -1`)
	time.Sleep(2 * time.Second)
	f2, _ := browsertest.Eval[float64](tab, `metal.stats ? metal.stats.framesDecoded : -1`)
	fmt.Fprintf(&b, "frames decoded: %.0f, 2 s later %.0f", f1, f2)
	return b.String()
}
