package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/metal-stream/metal/internal/browsertest"
	"github.com/metal-stream/metal/internal/localcluster"
	"github.com/metal-stream/metal/internal/localcluster/clustertest"
	"github.com/metal-stream/metal/internal/syncbuf"
)

const (
	e2eKey   = "e2e-signing-key-0123456789abcdef-0123"
	e2eAdmin = "e2e-admin-token-0123456789"
)

// gatewayProc is a real `metal gateway` process on the package's cluster.
type gatewayProc struct {
	netns  string // run inside this network namespace, when set
	url    string
	client *http.Client // trusts the test's self-signed certificate
	args   []string
	env    []string
	cmd    *exec.Cmd
	stderr *syncbuf.Buffer
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startGateway runs `metal gateway` with raw_exec streamers that draw the
// demo scene, and cleans Nomad and Consul when the test ends.
func startGateway(t testing.TB, capacity, queue int, extra ...string) *gatewayProc {
	t.Helper()
	return startGatewayOn(t, clustertest.Cluster(t), fmt.Sprint(capacity), queue, append([]string{"-gpu=false"}, extra...)...)
}

// startGatewayOn runs a gateway on cluster c; capacity is a number or auto.
func startGatewayOn(t testing.TB, c *localcluster.Cluster, capacity string, queue int, extra ...string) *gatewayProc {
	t.Helper()
	bin := metalBinary(t)
	port := freePort(t)
	g := &gatewayProc{
		url: fmt.Sprintf("http://127.0.0.1:%d", port),
		args: append([]string{"gateway",
			"-listen", fmt.Sprintf("127.0.0.1:%d", port),
			"-key", e2eKey, "-admin-token", e2eAdmin,
			"-capacity", capacity, "-queue", fmt.Sprint(queue),
			"-streamer-driver", "raw_exec", "-streamer-binary", bin,
			"-streamer-loopback", "-streamer-demo",
			"-resolution", "1280x720", "-fps", "30",
			"-rate", "10000", "-burst", "10000",
		}, extra...),
		env: append(os.Environ(), "NOMAD_ADDR="+c.NomadAddr, "CONSUL_HTTP_ADDR="+c.ConsulAddr),
	}
	if slices.Contains(extra, "-tls-cert") {
		g.url = strings.Replace(g.url, "http://", "https://", 1)
	}
	g.start(t)
	t.Cleanup(func() {
		g.stop(t)
		if t.Failed() && g.stderr != nil {
			log := g.stderr.String()
			t.Logf("gateway log (last 12 KB):\n%s", log[max(0, len(log)-12<<10):])
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := localcluster.PurgeJobs(ctx, c.Nomad); err != nil {
			t.Errorf("purge jobs: %v", err)
		}
		if _, err := c.Consul.KV().DeleteTree("metal/", nil); err != nil {
			t.Errorf("clean kv: %v", err)
		}
	})
	return g
}

func (g *gatewayProc) start(t testing.TB) {
	t.Helper()
	if g.stderr == nil {
		g.stderr = &syncbuf.Buffer{}
	}
	g.cmd = exec.Command(metalBinary(t), g.args...)
	if g.netns != "" {
		g.cmd = exec.Command("ip", append([]string{"netns", "exec", g.netns, metalBinary(t)}, g.args...)...)
	}
	g.cmd.Env = g.env
	g.cmd.Stderr = g.stderr
	if err := g.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := g.httpClient().Get(g.url + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("gateway not ready: %v\n%s", err, g.stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (g *gatewayProc) stop(t testing.TB) {
	if g.cmd == nil || g.cmd.ProcessState != nil {
		return
	}
	_ = g.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = g.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		_ = g.cmd.Process.Kill()
		<-done
		t.Errorf("gateway ignored SIGTERM")
	}
}

func (g *gatewayProc) api(t testing.TB, method, path, auth string, body any) (int, []byte) {
	t.Helper()
	code, b, err := g.do(method, path, auth, body)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	return code, b
}

// do is api returning a transport error (a gateway killed under the
// request) instead of failing the test.
func (g *gatewayProc) do(method, path, auth string, body any) (int, []byte, error) {
	var r io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		r = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, g.url+path, r)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if auth != "" {
		req.Header.Set("Authorization", "Bearer "+auth)
	}
	// Act as the session's player: the owner cookie the gateway gave
	// whoever created it (this API, or a browser tab: see sessionOf).
	if rest, ok := strings.CutPrefix(path, "/v1/sessions/"); ok && len(rest) >= 32 {
		if cs, ok := ownerCookies.Load(rest[:32]); ok {
			for _, c := range cs.([]*http.Cookie) {
				req.AddCookie(c)
			}
		}
	}
	resp, err := g.httpClient().Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, nil, err
	}
	if method == "POST" && path == "/v1/sessions" {
		if id := jsonField(b, "id"); id != "" {
			var mine []*http.Cookie
			for _, c := range resp.Cookies() {
				if strings.Contains(c.Name, "metal_p_") {
					mine = append(mine, c)
				}
			}
			ownerCookies.Store(id, mine)
		}
	}
	return resp.StatusCode, b, nil
}

// httpClient talks to the gateway; over HTTPS it accepts the test's
// self-signed certificate (tests only).
func (g *gatewayProc) httpClient() *http.Client {
	if strings.HasPrefix(g.url, "https://") {
		return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	}
	return http.DefaultClient
}

// ownerCookies are the owner cookies of the sessions the tests created, by
// session id: the tests act as each session's player.
var ownerCookies sync.Map

// playerLink issues a link through the admin API, as `metal player add` does.
func (g *gatewayProc) playerLink(t testing.TB, name string) string {
	t.Helper()
	code, b := g.api(t, "POST", "/v1/admin/players", e2eAdmin, map[string]string{"name": name})
	if code != 201 {
		t.Fatalf("add player %s: %d %s", name, code, b)
	}
	var l struct{ URL string }
	_ = json.Unmarshal(b, &l)
	return l.URL
}

type sessionView struct {
	ID       string `json:"id"`
	State    string `json:"state"`
	Position int    `json:"position"`
	Reason   string `json:"reason"`
	Node     string `json:"node"`
}

func (g *gatewayProc) session(t *testing.T, id string) sessionView {
	t.Helper()
	code, b := g.api(t, "GET", "/v1/sessions/"+id, "", nil)
	var v sessionView
	if code == 200 {
		_ = json.Unmarshal(b, &v)
	}
	return v
}

// open opens url in a new tab and waits for decoded frames.
func open(t *testing.T, browser context.Context, url string) context.Context {
	t.Helper()
	tab := browsertest.Tab(t, browser)
	if err := chromedp.Do(tab, chromedp.Navigate(url)); err != nil {
		t.Fatal(err)
	}
	return tab
}

func waitFrames(t *testing.T, tab context.Context, min int) {
	t.Helper()
	if err := browsertest.WaitTrue(tab, fmt.Sprintf(`metal.stats && metal.stats.framesDecoded > %d && metal.stats.width === 1280`, min), 90*time.Second); err != nil {
		t.Fatal(err)
	}
}

// sessionOf is the session the tab's page plays; the test adopts the
// tab's owner cookie for it, to read and stop it as its player.
func sessionOf(t testing.TB, tab context.Context) string {
	t.Helper()
	id, err := browsertest.Eval[string](tab, `metal.session ? metal.session.id : ""`)
	if err != nil || id == "" {
		t.Fatalf("no session on the page: %v", err)
	}
	res, err := chromedp.Call(tab, network.GetCookies, network.GetCookiesParams{})
	if err != nil {
		t.Fatalf("read the tab's cookies: %v", err)
	}
	var mine []*http.Cookie
	for _, c := range res.Cookies {
		if strings.Contains(c.Name, "metal_p_") {
			mine = append(mine, &http.Cookie{Name: c.Name, Value: c.Value})
		}
	}
	ownerCookies.Store(id, mine)
	return id
}

// TestPlayerURLStreams: a player opens their link in Chromium; the gateway
// has Nomad place a streamer, finds it in Consul, and frames decode.
func TestPlayerURLStreams(t *testing.T) {
	g := startGateway(t, 2, 5)
	browser := browsertest.New(t)
	tab := open(t, browser, g.playerLink(t, "alice"))
	waitFrames(t, tab, 30)
	id := sessionOf(t, tab)
	if err := browsertest.WaitTrue(tab, `metal.session.state === "connected"`, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	_, _ = browsertest.Eval[any](tab, `document.getElementById("stats").hidden = false, 0`)
	time.Sleep(1500 * time.Millisecond) // one stats refresh
	browsertest.Screenshot(t, tab, "player-streaming")
	v := g.session(t, id)
	if v.State != "connected" || v.Node == "" {
		t.Fatalf("session %+v, want connected on a node", v)
	}
	jobs, _, err := clustertest.Cluster(t).Nomad.Jobs().List(nil)
	if err != nil || len(jobs) != 1 || jobs[0].ID != "metal-session-"+id {
		t.Fatalf("Nomad jobs %v (%v), want exactly metal-session-%s", jobs, err, id)
	}
}

// TestQueueThenPlace: with capacity 1, a second player waits at position 1
// and is placed once the first leaves.
func TestQueueThenPlace(t *testing.T) {
	g := startGateway(t, 1, 3, "-reap-after", "5s")
	browser := browsertest.New(t)
	alice := open(t, browser, g.playerLink(t, "alice"))
	waitFrames(t, alice, 10)

	bob := open(t, browser, g.playerLink(t, "bob"))
	if err := browsertest.WaitTrue(bob, `(metal.status || "").includes("number 1 in the queue")`, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	browsertest.Screenshot(t, bob, "player-queued")
	if v := g.session(t, sessionOf(t, bob)); v.State != "queued" || v.Position != 1 {
		t.Fatalf("bob's session %+v, want queued at 1", v)
	}

	// Alice leaves: her tab goes away, her streamer sees no peer, the reaper
	// stops her session, and bob's is placed.
	aliceID := sessionOf(t, alice)
	if err := chromedp.Do(alice, chromedp.Navigate("about:blank")); err != nil {
		t.Fatal(err)
	}
	waitFrames(t, bob, 10)
	if v := g.session(t, aliceID); v.State != "ended" {
		t.Fatalf("alice's session %+v, want ended", v)
	}
}

// TestStreamerCrashShownQuickly kills the streamer process on a healthy
// node: within 5 seconds the player is told (the session failed, "streamer
// crashed"), and with failover auto a replacement session plays.
func TestStreamerCrashShownQuickly(t *testing.T) {
	g := startGateway(t, 1, 1)
	browser := browsertest.New(t)
	tab := open(t, browser, g.playerLink(t, "carol"))
	waitFrames(t, tab, 10)
	id := sessionOf(t, tab)
	pid := findPID(t, "-session "+id)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := browsertest.WaitTrue(tab, `(metal.failovers || 0) >= 1 || (metal.status || "").includes("streamer crashed")`, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	browsertest.Screenshot(t, tab, "player-crashed")
	v := g.sessionFull(t, id)
	if v.State != "failed" || !strings.Contains(v.Reason, "streamer crashed") || v.Replacement == "" {
		t.Fatalf("session %+v, want failed: streamer crashed, with a replacement", v)
	}
	if err := browsertest.WaitTrue(tab, `metal.session && metal.session.id === "`+v.Replacement+`" && metal.stats && metal.stats.framesDecoded > 10`, 60*time.Second); err != nil {
		t.Fatalf("the replacement does not play: %v", err)
	}
}

// TestGatewayRestartKeepsSession restarts the gateway process under a live
// stream: the session is still known afterwards and the video never stops.
func TestGatewayRestartKeepsSession(t *testing.T) {
	g := startGateway(t, 1, 1)
	browser := browsertest.New(t)
	tab := open(t, browser, g.playerLink(t, "dave"))
	waitFrames(t, tab, 10)
	id := sessionOf(t, tab)
	before := g.session(t, id)

	g.stop(t)
	g.start(t)

	after := g.session(t, id)
	if after.ID != id || (after.State != "connected" && after.State != "ready") || after.Node != before.Node {
		t.Fatalf("after restart: %+v, before: %+v", after, before)
	}
	frames, _ := browsertest.Eval[int](tab, `metal.stats.framesDecoded`)
	waitFrames(t, tab, frames+30)
	// Asking again for the same player resumes, not duplicates.
	code, b := g.api(t, "POST", "/v1/sessions", "", map[string]string{"link": linkToken(g.playerLink(t, "dave"))})
	if code == 200 && !strings.Contains(string(b), id) {
		t.Fatalf("resume after restart = %d %s", code, b)
	}
}

func linkToken(url string) string { return url[strings.LastIndex(url, "/p/")+3:] }

// TestFloodKeepsNomadSafe sends 200 concurrent session requests against
// capacity 2 and queue 5: every request is answered (201, 202 or 429),
// Nomad never holds more than capacity jobs, and none remain after the
// players leave.
func TestFloodKeepsNomadSafe(t *testing.T) {
	const capacity, queue, players = 2, 5, 200
	g := startGateway(t, capacity, queue, "-open")
	c := clustertest.Cluster(t)

	stopWatch := watchJobs(t, c)

	var mu sync.Mutex
	codes := map[int]int{}
	var ids []string
	var wg sync.WaitGroup
	for i := range players {
		wg.Add(1)
		go func() {
			defer wg.Done()
			code, b := g.api(t, "POST", "/v1/sessions", "", map[string]string{"guest": fmt.Sprintf("flood-player-%03d", i)})
			var v sessionView
			_ = json.Unmarshal(b, &v)
			mu.Lock()
			codes[code]++
			if v.ID != "" {
				ids = append(ids, v.ID)
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	if codes[201] != capacity || codes[202] != queue || codes[429] != players-capacity-queue {
		t.Errorf("answers %v, want %d×201, %d×202, %d×429", codes, capacity, queue, players-capacity-queue)
	}
	for _, id := range ids {
		if code, b := g.api(t, "DELETE", "/v1/sessions/"+id, "", nil); code != 204 {
			t.Errorf("leave %s: %d %s", id, code, b)
		}
	}
	waitNoJobs(t) // none left after the players left
	maxJobs := stopWatch()
	if maxJobs > capacity || maxJobs == 0 {
		t.Fatalf("Nomad held at most %d live jobs, want 1..%d (capacity: queued sessions have no job)", maxJobs, capacity)
	}
	t.Logf("answers %v; most live jobs in Nomad at once: %d", codes, maxJobs)
}

// findPID finds the process whose command line contains marker.
func findPID(t *testing.T, marker string) int {
	t.Helper()
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil {
			continue
		}
		if strings.Contains(strings.ReplaceAll(string(b), "\x00", " "), marker) {
			var pid int
			fmt.Sscan(e.Name(), &pid)
			return pid
		}
	}
	t.Fatalf("no process with %q", marker)
	return 0
}

// TestReconnectAndReloadKeepTheSession: a forced ICE restart through the
// gateway (WHEP PATCH) keeps the peer connection with new credentials; a
// dropped connection (the page's reconnect: a new WHEP peer, with fresh
// ICE, on the same streamer) and a reload of the player URL both resume
// the same session on the same allocation: no new placement.
func TestReconnectAndReloadKeepTheSession(t *testing.T) {
	g := startGateway(t, 2, 5)
	browser := browsertest.New(t)
	tab := open(t, browser, g.playerLink(t, "rita"))
	waitFrames(t, tab, 30)
	id := sessionOf(t, tab)
	nc := clustertest.Cluster(t).Nomad
	allocs := func() []string {
		t.Helper()
		list, _, err := nc.Jobs().Allocations("metal-session-"+id, true, nil)
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, a := range list {
			ids = append(ids, a.ID)
		}
		return ids
	}
	before := allocs()
	if len(before) != 1 {
		t.Fatalf("allocations of the session: %v, want one", before)
	}
	framesOf := func() float64 {
		f, _ := browsertest.Eval[float64](tab, `metal.stats ? metal.stats.framesDecoded : 0`)
		return f
	}

	// A forced ICE restart through the gateway (WHEP PATCH): the same peer
	// connection, new ICE credentials, frames go on.
	const ufrag = `metal.state.pc.currentRemoteDescription.sdp.match(/a=ice-ufrag:(\S+)/)[1]`
	oldUfrag, err := browsertest.Eval[string](tab, `(metal.restartPC = metal.state.pc, `+ufrag+`)`)
	if err != nil || oldUfrag == "" {
		t.Fatalf("the answer's ice-ufrag: %q %v", oldUfrag, err)
	}
	if ok, err := browsertest.Eval[bool](tab, `metal.restartIce()`); err != nil || !ok {
		msg, _ := browsertest.Eval[string](tab, `String(metal.lastIceRestartError)`)
		t.Fatalf("ICE restart through the gateway: %v %v: %s", ok, err, msg)
	}
	if err := browsertest.WaitTrue(tab, `metal.state.pc === metal.restartPC && ["connected", "completed"].includes(metal.state.pc.iceConnectionState) && `+ufrag+` !== `+strconv.Quote(oldUfrag), 20*time.Second); err != nil {
		t.Fatalf("after the ICE restart: %v", err)
	}
	waitFrames(t, tab, int(framesOf())+30)

	// A drop: the page tears its peer down and connects again.
	oldPC, _ := browsertest.Eval[bool](tab, `(metal.oldpc = metal.state.pc, true)`)
	if !oldPC {
		t.Fatal("no peer connection on the page")
	}
	if _, err := browsertest.Eval[any](tab, `metal.reconnect(), 0`); err != nil {
		t.Fatal(err)
	}
	if err := browsertest.WaitTrue(tab, `metal.state.pc && metal.state.pc !== metal.oldpc && metal.state.pc.connectionState === "connected"`, 30*time.Second); err != nil {
		t.Fatalf("no new connection after the reconnect: %v", err)
	}
	waitFrames(t, tab, int(framesOf())+30)
	if got := sessionOf(t, tab); got != id {
		t.Fatalf("after the reconnect the page plays session %s, want %s", got, id)
	}

	// A reload of the player URL: the owner cookie resumes the session.
	if err := chromedp.Do(tab, chromedp.Reload()); err != nil {
		t.Fatal(err)
	}
	waitFrames(t, tab, 30)
	if got := sessionOf(t, tab); got != id {
		t.Fatalf("after a reload the page plays session %s, want %s (a new placement)", got, id)
	}
	if after := allocs(); len(after) != 1 || after[0] != before[0] {
		t.Fatalf("allocations after reconnect and reload: %v, want the same one %v", after, before)
	}
	jobs, _, err := nc.Jobs().List(nil)
	if err != nil || len(jobs) != 1 {
		t.Fatalf("Nomad jobs %v (%v), want only this session's", jobs, err)
	}
}
