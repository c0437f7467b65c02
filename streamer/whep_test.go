package streamer

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"

	"github.com/metal-stream/metal/internal/token"
)

// offerSDP makes a real browser-like offer (recvonly video and audio, an
// input data channel) and returns it with its peer connection.
func offerSDP(t *testing.T) (string, *webrtc.PeerConnection) {
	t.Helper()
	var se webrtc.SettingEngine
	se.SetIncludeLoopbackCandidate(true)
	se.SetInterfaceFilter(func(name string) bool { return name == "lo" })
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	m := &webrtc.MediaEngine{}
	_ = m.RegisterDefaultCodecs()
	pc, err := webrtc.NewAPI(webrtc.WithMediaEngine(m), webrtc.WithSettingEngine(se)).NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pc.Close() })
	_, _ = pc.AddTransceiverFromKind(webrtc.RTPCodecTypeVideo, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly})
	_, _ = pc.AddTransceiverFromKind(webrtc.RTPCodecTypeAudio, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly})
	offer, _ := pc.CreateOffer(nil)
	done := webrtc.GatheringCompletePromise(pc)
	_ = pc.SetLocalDescription(offer)
	<-done
	return pc.LocalDescription().SDP, pc
}

func whepDo(t *testing.T, method, url, tok, body string) (int, string, string) {
	t.Helper()
	req, _ := http.NewRequest(method, url, bytes.NewBufferString(body))
	if body != "" {
		req.Header.Set("Content-Type", "application/sdp")
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("Location"), string(b)
}

// TestSingleUseTokensAndCreatorDelete: a single-use token (what the gateway
// mints) answers one offer and is refused when replayed; a WHEP resource is
// deleted only with its creator's role; the peer limit holds when many
// offers arrive at once.
func TestSingleUseTokensAndCreatorDelete(t *testing.T) {
	r := startStreamer(t, func(c *Config) { c.Audio = false })
	signer, _ := token.NewSigner(testKey)
	once, _ := signer.SignOnce("sess-test", token.RoleOwner, time.Minute, time.Now())
	offer, _ := offerSDP(t)
	code, loc, body := whepDo(t, "POST", r.URL()+"/whep", once, offer)
	if code != 201 {
		t.Fatalf("first use = %d %s", code, body)
	}
	offer2, _ := offerSDP(t)
	if code, _, body := whepDo(t, "POST", r.URL()+"/whep", once, offer2); code != 401 || !bytes.Contains([]byte(body), []byte("already used")) {
		t.Fatalf("replayed single-use token = %d %s, want 401 already used", code, body)
	}
	viewer, _ := signer.SignOnce("sess-test", token.RoleViewer, time.Minute, time.Now())
	if code, _, _ := whepDo(t, "DELETE", r.URL()+loc, viewer, ""); code != 404 {
		t.Fatalf("a viewer deleting the owner's WHEP session = %d, want 404", code)
	}
	owner2, _ := signer.SignOnce("sess-test", token.RoleOwner, time.Minute, time.Now())
	if code, _, body := whepDo(t, "DELETE", r.URL()+loc, owner2, ""); code != 200 {
		t.Fatalf("the owner deleting its WHEP session = %d %s", code, body)
	}

	// Twelve spectators' offers at once: never more than maxPeers-1
	// answered (the last slot is the owner's), and the owner still gets in.
	const n = 12
	offers := make([]string, n)
	for i := range offers {
		offers[i], _ = offerSDP(t)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	codes := map[int]int{}
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tok, _ := signer.SignOnce("sess-test", token.RoleViewer, time.Minute, time.Now())
			code, _, _ := whepDo(t, "POST", r.URL()+"/whep", tok, offers[i])
			mu.Lock()
			codes[code]++
			mu.Unlock()
		}()
	}
	wg.Wait()
	if codes[201] != maxPeers-1 || codes[503] != n-maxPeers+1 {
		t.Fatalf("answers to %d concurrent spectator offers %v, want %d×201 and the rest 503", n, codes, maxPeers-1)
	}
	owner3, _ := signer.SignOnce("sess-test", token.RoleOwner, time.Minute, time.Now())
	offer3, _ := offerSDP(t)
	if code, _, body := whepDo(t, "POST", r.URL()+"/whep", owner3, offer3); code != 201 {
		t.Fatalf("the owner with spectators filling the rest = %d %s, want 201", code, body)
	}
	if h, _ := health(t, r.URL()); h.Peers != 1 || h.Viewers != maxPeers-1 {
		t.Fatalf("healthz peers %d viewers %d, want 1 and %d", h.Peers, h.Viewers, maxPeers-1)
	}
	// The owner drops the spectators (a revoked share link).
	owner4, _ := signer.SignOnce("sess-test", token.RoleOwner, time.Minute, time.Now())
	if code, _, body := whepDo(t, "DELETE", r.URL()+"/whep", owner4, ""); code != 200 || !strings.Contains(body, fmt.Sprintf(`"dropped":%d`, maxPeers-1)) {
		t.Fatalf("drop spectators = %d %s", code, body)
	}
	if h, _ := health(t, r.URL()); h.Peers != 1 || h.Viewers != 0 {
		t.Fatalf("after the drop: healthz peers %d viewers %d, want 1 and 0", h.Peers, h.Viewers)
	}
	// A gateway-run streamer accepts only single-use tokens.
	r.cfg.SingleUseTokens = true
	reusable, _ := signer.Sign("sess-test", token.RoleOwner, time.Minute, time.Now())
	offer5, _ := offerSDP(t)
	if code, _, body := whepDo(t, "POST", r.URL()+"/whep", reusable, offer5); code != 401 || !strings.Contains(body, "single-use") {
		t.Fatalf("a reusable token on a gateway-run streamer = %d %s, want 401", code, body)
	}
}

// keyState is what the X display tells about a key (x11.Display has it).
type keyState interface{ KeyDown(keysym uint32) bool }

// TestHeldKeysReleasedOnDisconnect: a key the owner holds down when its
// peer goes away is released on the display.
func TestHeldKeysReleasedOnDisconnect(t *testing.T) {
	r := startStreamer(t, func(c *Config) { c.Audio = false })
	ks, ok := r.input.(keyState)
	if !ok {
		t.Fatalf("input %T cannot tell key state", r.input)
	}
	v := dialViewer(t, r.Server)
	dc := v.input
	open := make(chan struct{})
	dc.OnOpen(func() { close(open) })
	select {
	case <-open:
	case <-time.After(10 * time.Second):
		t.Fatal("input channel never opened")
	}
	const keysym = 0xffe1 // Shift_L
	if err := dc.SendText(`{"type":"key","keysym":65505,"down":true}`); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the key held down", func() bool { return ks.KeyDown(keysym) })
	_ = v.pc.Close() // the player's connection drops
	waitFor(t, "the key released after the peer left", func() bool { return !ks.KeyDown(keysym) })
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestInputLimitsArePerPeer: a viewer's refused input is answered at a
// bounded rate, and a second input channel on the same peer is closed, so
// opening channels buys no extra budget.
func TestInputLimitsArePerPeer(t *testing.T) {
	r := startStreamer(t, func(c *Config) { c.Audio = false })
	signer, _ := token.NewSigner(testKey)
	tok, _ := signer.SignOnce("sess-test", token.RoleViewer, time.Minute, time.Now())
	v := dialViewerWith(t, r.Server, tok)
	var mu sync.Mutex
	replies := 0
	v.input.OnMessage(func(webrtc.DataChannelMessage) { mu.Lock(); replies++; mu.Unlock() })
	open := make(chan struct{})
	v.input.OnOpen(func() { close(open) })
	select {
	case <-open:
	case <-time.After(10 * time.Second):
		t.Fatal("input channel never opened")
	}
	second, err := v.pc.CreateDataChannel("input", nil)
	if err != nil {
		t.Fatal(err)
	}
	closed := make(chan struct{})
	second.OnClose(func() { close(closed) })
	for range 200 {
		_ = v.input.SendText(`{"type":"key","keysym":97,"down":true}`)
	}
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("a second input channel on one peer stayed open")
	}
	time.Sleep(time.Second)
	mu.Lock()
	n := replies
	mu.Unlock()
	if n == 0 || n > 45 {
		t.Fatalf("%d refusals answered for 200 view-only messages in about a second, want 1..45 (20 a second, burst 20)", n)
	}
}
