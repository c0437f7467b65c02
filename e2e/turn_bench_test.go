package e2e

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	pionturn "github.com/pion/turn/v3"

	"github.com/metal-stream/metal/internal/benchout"
	"github.com/metal-stream/metal/internal/pionlog"
	"github.com/metal-stream/metal/turn"
)

// relayServer is a TURN server process under test: Metal's or coturn.
type relayServer struct {
	name string
	addr string
	cmd  *exec.Cmd
}

func startMetalTURN(b *testing.B) *relayServer {
	port := freePort(b)
	cmd := exec.Command(metalBinary(b), "turn", "-listen", fmt.Sprintf("127.0.0.1:%d", port),
		"-health-listen", fmt.Sprintf("127.0.0.1:%d", freePort(b)), "-relay-ip", relayIP,
		"-min-port", "49160", "-max-port", "49200", "-max-allocations", "40", "-allow", "198.18.0.0/24", "-allow-local-peers", "-allocation-kbps", "0",
		"-listeners", fmt.Sprint(runtime.NumCPU()))
	cmd.Env = append(os.Environ(), "METAL_SECRET="+turnSecret, "METAL_LOG_LEVEL=error")
	return startRelay(b, "metal", port, cmd)
}

func startCoturn(b *testing.B) *relayServer {
	bin, err := exec.LookPath("turnserver")
	if err != nil {
		if os.Getenv("CI") == "true" {
			b.Fatalf("coturn missing (apt-get install coturn): %v", err)
		}
		b.Skipf("coturn missing (apt-get install coturn): %v", err)
	}
	port := freePort(b)
	dir := b.TempDir()
	cmd := exec.Command(bin, "-n", "--listening-ip=127.0.0.1", fmt.Sprintf("--listening-port=%d", port),
		"--relay-ip="+relayIP, "--min-port=50000", "--max-port=50100", "--use-auth-secret",
		"--static-auth-secret="+turnSecret, "--realm=metal", "--no-tls", "--no-dtls", "--no-cli",
		"--allowed-peer-ip=198.18.0.0-198.18.0.255", "--denied-peer-ip=0.0.0.0-198.17.255.255",
		fmt.Sprintf("--relay-threads=%d", runtime.NumCPU()), "--pidfile="+filepath.Join(dir, "pid"),
		"--log-file="+filepath.Join(dir, "log"), "--simple-log", "--no-stun-backward-compatibility")
	return startRelay(b, "coturn", port, cmd)
}

func startRelay(b *testing.B, name string, port int, cmd *exec.Cmd) *relayServer {
	cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	r := &relayServer{name: name, addr: fmt.Sprintf("127.0.0.1:%d", port), cmd: cmd}
	// Ready when an allocation succeeds.
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, relay, err := allocate(r.addr)
		if err == nil {
			relay.Close()
			c.Close()
			return r
		}
		if time.Now().After(deadline) {
			b.Fatalf("%s not answering: %v", name, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func allocate(addr string) (*pionturn.Client, net.PacketConn, error) {
	conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		return nil, nil, err
	}
	user, pass, _ := turn.Credentials(turnSecret, "bench", time.Hour)
	c, err := pionturn.NewClient(&pionturn.ClientConfig{TURNServerAddr: addr, STUNServerAddr: addr,
		Username: user, Password: pass, Realm: "metal", Conn: conn,
		LoggerFactory: pionlog.Factory{Log: slog.New(slog.NewTextHandler(io.Discard, nil))}})
	if err != nil {
		conn.Close()
		return nil, nil, err
	}
	if err := c.Listen(); err != nil {
		c.Close()
		return nil, nil, err
	}
	relay, err := c.Allocate()
	if err != nil {
		c.Close()
		return nil, nil, err
	}
	return c, relay, nil
}

// relayResult is one timed run.
type relayResult struct {
	pps       float64 // datagrams/s delivered at the far end
	serverCPU float64 // % of one core
	usPerDgm  float64 // server CPU µs per delivered datagram
	loadCPU   float64 // % of one core, the load generator (this process)
}

// relayRun relays 200-byte datagrams through n allocations for d, in one
// direction: "to_peer" (client → peer) or "to_client" (peer → client, the
// streaming direction: a streamer sends video to a relayed browser). It
// measures what arrives, the server's CPU and, apart, this process's.
func relayRun(b *testing.B, r *relayServer, n int, d time.Duration, dir string) relayResult {
	type alloc struct {
		c     *pionturn.Client
		relay net.PacketConn
		peer  net.PacketConn
	}
	var got atomic.Int64
	var allocs []alloc
	for range n {
		c, relay, err := allocate(r.addr)
		if err != nil {
			b.Fatalf("%s allocate: %v", r.name, err)
		}
		peer, err := net.ListenPacket("udp4", streamIP+":0")
		if err != nil {
			b.Fatal(err)
		}
		allocs = append(allocs, alloc{c, relay, peer})
		// Permission and channel first, outside the measured window.
		for range 3 {
			_, _ = relay.WriteTo([]byte("warm"), peer.LocalAddr())
			time.Sleep(20 * time.Millisecond)
		}
	}
	// The receiving ends count.
	for _, a := range allocs {
		recv := a.peer
		if dir == "to_client" {
			recv = a.relay
		}
		go func() {
			buf := make([]byte, 1500)
			for {
				if _, _, err := recv.ReadFrom(buf); err != nil {
					return
				}
				got.Add(1)
			}
		}()
	}
	time.Sleep(200 * time.Millisecond)
	got.Store(0)
	self := os.Getpid()
	cpu0, load0, t0 := benchout.ProcessCPU(r.cmd.Process.Pid), benchout.ProcessCPU(self), time.Now()
	stop := time.Now().Add(d)
	var wg sync.WaitGroup
	payload := make([]byte, 200)
	for _, a := range allocs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			relayAddr := a.relay.LocalAddr()
			for i := 0; time.Now().Before(stop); i++ {
				if dir == "to_client" {
					_, _ = a.peer.WriteTo(payload, relayAddr)
				} else {
					_, _ = a.relay.WriteTo(payload, a.peer.LocalAddr())
				}
				if i%64 == 63 {
					runtime.Gosched()
				}
			}
		}()
	}
	wg.Wait()
	time.Sleep(100 * time.Millisecond)
	elapsed := time.Since(t0)
	delivered := got.Load()
	serverCPU := (benchout.ProcessCPU(r.cmd.Process.Pid) - cpu0).Seconds()
	loadCPU := (benchout.ProcessCPU(self) - load0).Seconds()
	for _, a := range allocs {
		a.relay.Close()
		a.c.Close()
		a.peer.Close()
	}
	res := relayResult{
		pps:       float64(delivered) / d.Seconds(),
		serverCPU: serverCPU / elapsed.Seconds() * 100,
		loadCPU:   loadCPU / elapsed.Seconds() * 100,
	}
	if delivered > 0 {
		res.usPerDgm = serverCPU / float64(delivered) * 1e6
	}
	return res
}

// BenchmarkTURNRelay compares Metal's TURN with coturn (same listener,
// auth and peer settings) in both directions: relayed datagrams per second
// and server CPU per datagram, side by side, the order of the two servers
// alternating from run to run, and reports the ratios of medians. The load
// generator's CPU (this process) is reported apart: on a 2-core machine it
// competes with the server it measures.
func BenchmarkTURNRelay(b *testing.B) {
	metal, coturn := startMetalTURN(b), startCoturn(b)
	for _, dir := range []string{"to_client", "to_peer"} {
		for _, n := range []int{1, 4} {
			b.Run(fmt.Sprintf("%s/allocations=%d", dir, n), func(b *testing.B) {
				res := map[string][]relayResult{}
				for i := range max(b.N, 5) {
					order := []*relayServer{metal, coturn}
					if i%2 == 1 {
						order = []*relayServer{coturn, metal}
					}
					for _, r := range order {
						res[r.name] = append(res[r.name], relayRun(b, r, n, 2*time.Second, dir))
					}
				}
				med := func(name string, f func(relayResult) float64) float64 {
					var v []float64
					for _, r := range res[name] {
						v = append(v, f(r))
					}
					return benchout.Percentile(v, 50)
				}
				pps := func(r relayResult) float64 { return r.pps }
				us := func(r relayResult) float64 { return r.usPerDgm }
				for _, name := range []string{"metal", "coturn"} {
					var v, cpu, load []float64
					for _, r := range res[name] {
						v, cpu, load = append(v, r.pps), append(cpu, r.usPerDgm), append(load, r.loadCPU)
					}
					benchout.Record(fmt.Sprintf("turn-%s-pps/%s/%d", name, dir, n), "pkt/s", v)
					benchout.Record(fmt.Sprintf("turn-%s-us/%s/%d", name, dir, n), "us/pkt", cpu)
					benchout.Record(fmt.Sprintf("turn-%s-load/%s/%d", name, dir, n), "%", load)
				}
				b.ReportMetric(med("metal", pps), "metal-pkt/s")
				b.ReportMetric(med("coturn", pps), "coturn-pkt/s")
				b.ReportMetric(med("metal", pps)/med("coturn", pps), "metal/coturn-pkt/s")
				b.ReportMetric(med("metal", us), "metal-us/pkt")
				b.ReportMetric(med("coturn", us), "coturn-us/pkt")
				b.ReportMetric(med("metal", us)/med("coturn", us), "metal/coturn-cpu/pkt")
				b.ReportMetric(med("metal", func(r relayResult) float64 { return r.loadCPU }), "load-cpu-%-with-metal")
				b.ReportMetric(med("coturn", func(r relayResult) float64 { return r.loadCPU }), "load-cpu-%-with-coturn")
			})
		}
	}
}
