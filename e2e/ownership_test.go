package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	nomad "github.com/hashicorp/nomad/api"
	"github.com/pion/stun/v2"

	"github.com/metal-stream/metal/internal/browsertest"
	"github.com/metal-stream/metal/internal/localcluster"
	"github.com/metal-stream/metal/internal/localcluster/clustertest"
	"github.com/metal-stream/metal/internal/token"
	"github.com/metal-stream/metal/jobs"
)

// fetchFrom runs fetch(path) in the tab's page (same origin, its cookies)
// and returns the status.
func fetchFrom(t *testing.T, tab context.Context, method, path string) int {
	t.Helper()
	code, err := browsertest.Eval[int](tab, fmt.Sprintf(`fetch(%q, {method: %q, credentials: "same-origin"}).then(r => r.status)`, path, method))
	if err != nil {
		t.Fatalf("%s %s from the page: %v", method, path, err)
	}
	return code
}

func framesOf(t *testing.T, tab context.Context) int {
	t.Helper()
	n, err := browsertest.Eval[int](tab, `metal.stats ? metal.stats.framesDecoded : 0`)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestStrangerCannotTouchSession: a second browser context that knows the
// first player's session id but not its cookie gets 404 on reading it, its
// progress stream, stopping it, offering WHEP and sharing it; the first
// player keeps playing. Then the owner shares a view-only link: a
// spectator in a third context gets frames, and its input is refused.
func TestStrangerCannotTouchSession(t *testing.T) {
	g := startGateway(t, 2, 3)
	browser := browsertest.New(t)
	alice := browsertest.Stranger(t, browser)
	if err := chromedp.Do(alice, chromedp.Navigate(g.playerLink(t, "alice"))); err != nil {
		t.Fatal(err)
	}
	waitFrames(t, alice, 10)
	id := sessionOf(t, alice)

	// Mallory is a player too, with her own session and owner cookie.
	mallory := browsertest.Stranger(t, browser)
	if err := chromedp.Do(mallory, chromedp.Navigate(g.playerLink(t, "mallory"))); err != nil {
		t.Fatal(err)
	}
	if err := browsertest.WaitTrue(mallory, `metal.session && metal.session.id`, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	for _, r := range []struct{ method, path string }{
		{"GET", "/v1/sessions/" + id},
		{"GET", "/v1/sessions/" + id + "/events"},
		{"DELETE", "/v1/sessions/" + id},
		{"POST", "/v1/sessions/" + id + "/whep"},
		{"POST", "/v1/sessions/" + id + "/shares"},
	} {
		if code := fetchFrom(t, mallory, r.method, r.path); code != 404 {
			t.Errorf("stranger %s %s = %d, want 404", r.method, r.path, code)
		}
	}
	before := framesOf(t, alice)
	time.Sleep(2 * time.Second)
	if v := g.session(t, id); v.State != "connected" {
		t.Fatalf("alice's session after the stranger tried: %+v", v)
	}
	if after := framesOf(t, alice); after <= before+10 {
		t.Fatalf("alice stopped playing after the stranger tried: %d then %d frames", before, after)
	}

	// The streamer Nomad placed accepts a gateway-minted (single-use) owner
	// token once: a replay of it is refused, and so is a reusable token.
	signer, _ := token.NewSigner(token.DeriveKey([]byte(e2eKey), id))
	once, _ := signer.SignOnce(id, token.RoleOwner, time.Minute, time.Now())
	reusable, _ := signer.Sign(id, token.RoleOwner, time.Minute, time.Now())
	svcs, _, err := clustertest.Cluster(t).Consul.Catalog().Service("metal-streamer", "session-"+id, nil)
	if err != nil || len(svcs) != 1 {
		t.Fatalf("streamer in Consul: %v %d", err, len(svcs))
	}
	whep := fmt.Sprintf("http://%s:%d/whep", svcs[0].ServiceAddress, svcs[0].ServicePort)
	offer := "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 102\r\nc=IN IP4 0.0.0.0\r\na=recvonly\r\n"
	post := func(tok string) (int, string) {
		req, _ := http.NewRequest("POST", whep, strings.NewReader(offer))
		req.Header.Set("Content-Type", "application/sdp")
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := post(once); code == 401 {
		t.Fatalf("first use of a single-use token refused: %s", body)
	}
	if code, body := post(once); code != 401 || !strings.Contains(body, "already used") {
		t.Fatalf("replayed owner token = %d %s, want 401 already used", code, body)
	}
	if code, body := post(reusable); code != 401 || !strings.Contains(body, "single-use") {
		t.Fatalf("reusable owner token = %d %s, want 401", code, body)
	}

	// The owner shares; a spectator watches and cannot steer.
	code, b := g.api(t, "POST", "/v1/sessions/"+id+"/shares", "", map[string]int{"ttl_seconds": 600})
	if code != 201 {
		t.Fatalf("share: %d %s", code, b)
	}
	var share struct{ ID, URL string }
	_ = json.Unmarshal(b, &share)
	spectator := browsertest.Stranger(t, browser)
	if err := chromedp.Do(spectator, chromedp.Navigate(share.URL)); err != nil {
		t.Fatal(err)
	}
	if err := browsertest.WaitTrue(spectator, `metal.stats && metal.stats.framesDecoded > 10`, 60*time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := browsertest.Eval[any](spectator, `metal.state.dc.send(JSON.stringify({type: "key", keysym: 97, down: true})), 0`); err != nil {
		t.Fatal(err)
	}
	if err := browsertest.WaitTrue(spectator, `(metal.lastInputError || "").includes("view-only")`, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	// The spectator is no owner: the session's own API stays closed to it.
	if code := fetchFrom(t, spectator, "GET", "/v1/sessions/"+id); code != 404 {
		t.Fatalf("spectator reads the session = %d, want 404", code)
	}
	// Revoked, the link shows nothing more, and the spectator already
	// watching is cut off.
	if code, b := g.api(t, "DELETE", "/v1/sessions/"+id+"/shares/"+share.ID, "", nil); code != 204 {
		t.Fatalf("revoke: %d %s", code, b)
	}
	time.Sleep(3 * time.Second)
	cut := framesOf(t, spectator)
	time.Sleep(2 * time.Second)
	if now := framesOf(t, spectator); now > cut+5 {
		t.Fatalf("the spectator still decodes after the revoke: %d then %d frames", cut, now)
	}
	if code := fetchFrom(t, spectator, "GET", "/v1/shares/"+share.ID); code != 404 {
		t.Fatalf("revoked share = %d, want 404", code)
	}
	if code := fetchFrom(t, spectator, "POST", "/v1/shares/"+share.ID+"/whep"); code != 404 {
		t.Fatalf("WHEP through a revoked share = %d, want 404", code)
	}
}

// selfSigned writes a self-signed certificate for 127.0.0.1 and returns the
// certificate and key files.
func selfSigned(t *testing.T) (string, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "metal-e2e"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost"},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	dir := t.TempDir()
	cert, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	_ = os.WriteFile(cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	_ = os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
	return cert, keyFile
}

// TestHTTPSGatewayPlays: the gateway serves HTTPS with a self-signed
// certificate (Chromium told to accept it, tests only), and the edge runs
// Metal's TURN. The page must play with no mixed content: WHEP goes through
// the gateway, and the edge RTT is measured through STUN to the edge's TURN
// (an http:// probe would be blocked). The owner cookie is Secure.
func TestHTTPSGatewayPlays(t *testing.T) {
	c := clustertest.Cluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// The relays' TLS certificate and key come from the job's Nomad
	// variable (tls_cert, tls_key), as an operator stores them.
	cert, key := selfSigned(t)
	certPEM, err := os.ReadFile(cert)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := os.ReadFile(key)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.Nomad.Variables().Create(&nomad.Variable{Path: "nomad/jobs/metal-turn", Items: nomad.VariableItems{
		"secret": "https-test-turn-secret-0123456789", "tls_cert": string(certPEM), "tls_key": string(keyPEM)}}, nil); err != nil {
		t.Fatal(err)
	}
	turnHCL, err := jobs.Read("turn.nomad.hcl")
	if err != nil {
		t.Fatal(err)
	}
	ports, err := localcluster.FreePorts(3)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := localcluster.RunJob(ctx, c.Nomad, turnHCL, map[string]any{
		"driver": "raw_exec", "metal_binary": metalBinary(t), "relay_ip": "127.0.0.1", "bind": "127.0.0.1",
		"port": ports[0], "health_port": ports[1], "tls_port": ports[2],
	}); err != nil {
		t.Fatal(err)
	}
	waitPassing(t, c, "metal-turn", 1)
	checkTURNSCertificate(t, fmt.Sprintf("127.0.0.1:%d", ports[2]), certPEM)

	g := startGateway(t, 2, 3, "-tls-cert", cert, "-tls-key", key)
	browser := browsertest.NewTrustingSelfSigned(t)
	tab := browsertest.Stranger(t, browser)
	link := g.playerLink(t, "dora")
	if !strings.HasPrefix(link, "https://") {
		t.Fatalf("player link %q, want https", link)
	}
	if err := chromedp.Do(tab, chromedp.Navigate(link)); err != nil {
		t.Fatal(err)
	}
	waitFrames(t, tab, 30)
	if err := browsertest.WaitTrue(tab, `metal.rttMethod === "stun" && metal.rtt && metal.rtt.dc1 > 0`, 5*time.Second); err != nil {
		dbg, _ := browsertest.Eval[string](tab, `fetch("/v1/edges").then(r => r.text()).then(e => JSON.stringify({e, m: metal.rttMethod, r: metal.rtt}))`)
		t.Fatalf("edge RTT from the HTTPS page: %v; %s", err, dbg)
	}
	// The figure comes from the TURN server answering: a port nobody
	// answers on gives no measurement.
	if v, err := browsertest.Eval[any](tab, `metalGateway.stunRTT("stun:127.0.0.1:9", 1500)`); err != nil || v != nil {
		t.Fatalf("STUN RTT to a closed port = %v (%v), want none", v, err)
	}
	rtt, _ := browsertest.Eval[float64](tab, `metal.rtt.dc1`)
	t.Logf("edge RTT measured through STUN from the HTTPS page: %.1f ms", rtt)
	res, err := chromedp.Call(tab, network.GetCookies, network.GetCookiesParams{})
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, ck := range res.Cookies {
		if strings.Contains(ck.Name, "metal_p_") {
			found = true
			if !strings.HasPrefix(ck.Name, "__Host-") || !ck.Secure || !ck.HTTPOnly || ck.SameSite != network.CookieSameSiteStrict {
				t.Fatalf("owner cookie over HTTPS %+v: want __Host-, Secure, HttpOnly, SameSite=Strict", ck)
			}
		}
	}
	if !found {
		t.Fatal("no owner cookie")
	}
}

// checkTURNSCertificate dials the relay's turns: listener trusting only
// certPEM and has a STUN Binding request answered over it: the listener
// serves the certificate the job's template rendered from the variable.
func checkTURNSCertificate(t *testing.T, addr string, certPEM []byte) {
	t.Helper()
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(certPEM) {
		t.Fatal("test certificate does not parse")
	}
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatalf("turns: listener %s with the certificate from the Nomad variable: %v", addr, err)
	}
	defer conn.Close()
	req := stun.MustBuild(stun.TransactionID, stun.BindingRequest)
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Write(req.Raw); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1500)
	n, err := conn.Read(buf)
	if err != nil {
		t.Fatalf("no STUN answer over turns: %v", err)
	}
	res := &stun.Message{Raw: buf[:n]}
	if err := res.Decode(); err != nil || res.Type != stun.BindingSuccess || res.TransactionID != req.TransactionID {
		t.Fatalf("STUN over turns: answer %v (%v), want a Binding success", res, err)
	}
}
