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
		"-min-port", "49160", "-max-port", "49200", "-allow", "198.18.0.0/24", "-allocation-kbps", "0",
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

// relayRun pushes 200-byte packets from n allocations to one peer for d and
// returns packets/s received by the peer and the server's CPU %.
func relayRun(b *testing.B, r *relayServer, n int, d time.Duration) (float64, float64) {
	sink, err := net.ListenPacket("udp4", streamIP+":0")
	if err != nil {
		b.Fatal(err)
	}
	defer sink.Close()
	var got atomic.Int64
	go func() {
		buf := make([]byte, 1500)
		for {
			if _, _, err := sink.ReadFrom(buf); err != nil {
				return
			}
			got.Add(1)
		}
	}()
	type alloc struct {
		c     *pionturn.Client
		relay net.PacketConn
	}
	var allocs []alloc
	for range n {
		c, relay, err := allocate(r.addr)
		if err != nil {
			b.Fatalf("%s allocate: %v", r.name, err)
		}
		allocs = append(allocs, alloc{c, relay})
		// Permission and channel first, outside the measured window.
		_, _ = relay.WriteTo([]byte("warm"), sink.LocalAddr())
	}
	time.Sleep(200 * time.Millisecond)
	got.Store(0)
	cpu0, t0 := benchout.ProcessCPU(r.cmd.Process.Pid), time.Now()
	stop := time.Now().Add(d)
	var wg sync.WaitGroup
	payload := make([]byte, 200)
	for _, a := range allocs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; time.Now().Before(stop); i++ {
				_, _ = a.relay.WriteTo(payload, sink.LocalAddr())
				if i%64 == 63 {
					runtime.Gosched()
				}
			}
		}()
	}
	wg.Wait()
	time.Sleep(100 * time.Millisecond)
	elapsed := time.Since(t0)
	pps := float64(got.Load()) / d.Seconds()
	cpu := (benchout.ProcessCPU(r.cmd.Process.Pid) - cpu0).Seconds() / elapsed.Seconds() * 100
	for _, a := range allocs {
		a.relay.Close()
		a.c.Close()
	}
	return pps, cpu
}

// BenchmarkTURNRelay compares relayed packets/s and server CPU of Metal's
// TURN and coturn (same listener, auth and peer settings), interleaving
// their runs, and prints the ratio of medians.
func BenchmarkTURNRelay(b *testing.B) {
	metal, coturn := startMetalTURN(b), startCoturn(b)
	for _, n := range []int{1, 4} {
		b.Run(fmt.Sprintf("allocations=%d", n), func(b *testing.B) {
			var mp, cp, mc, cc []float64
			for range max(b.N, 3) {
				p, c := relayRun(b, metal, n, 2*time.Second)
				mp, mc = append(mp, p), append(mc, c)
				p, c = relayRun(b, coturn, n, 2*time.Second)
				cp, cc = append(cp, p), append(cc, c)
			}
			med := func(v []float64) float64 { return benchout.Percentile(v, 50) }
			benchout.Record(fmt.Sprintf("turn-metal-pps/%d", n), "pkt/s", mp)
			benchout.Record(fmt.Sprintf("turn-coturn-pps/%d", n), "pkt/s", cp)
			benchout.Record(fmt.Sprintf("turn-metal-cpu/%d", n), "%", mc)
			benchout.Record(fmt.Sprintf("turn-coturn-cpu/%d", n), "%", cc)
			b.ReportMetric(med(mp), "metal-pkt/s")
			b.ReportMetric(med(cp), "coturn-pkt/s")
			b.ReportMetric(med(mp)/med(cp), "metal/coturn")
			b.ReportMetric(med(mc), "metal-cpu-%")
			b.ReportMetric(med(cc), "coturn-cpu-%")
		})
	}
}
