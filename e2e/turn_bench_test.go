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
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	pionturn "github.com/pion/turn/v3"
	"golang.org/x/sys/unix"

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
		"-listeners", fmt.Sprint(relayThreads()))
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
		fmt.Sprintf("--relay-threads=%d", relayThreads()), "--pidfile="+filepath.Join(dir, "pid"),
		"--log-file="+filepath.Join(dir, "log"), "--simple-log", "--no-stun-backward-compatibility")
	return startRelay(b, "coturn", port, cmd)
}

// relayThreads is how many threads (coturn) and listener sockets (Metal)
// each server gets: one per core it runs on, which is one when it is
// pinned (startRelay); Go sizes GOMAXPROCS from the same affinity.
func relayThreads() int {
	if runtime.NumCPU() >= 2 {
		return 1
	}
	return runtime.NumCPU()
}

func startRelay(b *testing.B, name string, port int, cmd *exec.Cmd) *relayServer {
	cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
	if runtime.NumCPU() >= 2 {
		// The server alone on the last core, the load generator on the
		// others (pinLoad): each server gets the same whole core, and the
		// generator's CPU cannot starve it.
		cmd.Args = append([]string{"taskset", "-c", fmt.Sprint(runtime.NumCPU() - 1)}, cmd.Args...)
		cmd.Path, _ = exec.LookPath("taskset")
	}
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
	drops     float64 // datagrams/s the kernel dropped on full receive buffers (any socket)
}

// relayRun relays 200-byte datagrams through n allocations for d, in one
// direction: "to_peer" (client → peer) or "to_client" (peer → client, the
// streaming direction: a streamer sends video to a relayed browser). The
// clients and peers are plain UDP sockets that send and receive in batches
// (rawAlloc), so the load generator stays light. It measures what arrives,
// the server's CPU and, apart, this process's.
func relayRun(b *testing.B, r *relayServer, n int, d time.Duration, dir string) relayResult {
	type alloc struct {
		a    *rawAlloc
		peer *net.UDPConn
	}
	var got atomic.Int64
	var allocs []alloc
	for i := range n {
		peer, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP(streamIP)})
		if err != nil {
			b.Fatal(err)
		}
		a, err := rawAllocate(r.addr, peer.LocalAddr().(*net.UDPAddr), uint16(0x4000+i))
		if err != nil {
			b.Fatalf("%s allocate: %v", r.name, err)
		}
		allocs = append(allocs, alloc{a, peer})
	}
	// The receiving ends count.
	var drained sync.WaitGroup
	for _, a := range allocs {
		recv := a.peer
		if dir == "to_client" {
			recv = a.a.conn
		}
		drained.Add(1)
		go func() {
			defer drained.Done()
			drain(recv, func(k int) { got.Add(int64(k)) })
		}()
	}
	time.Sleep(200 * time.Millisecond)
	got.Store(0)
	self := os.Getpid()
	drops0 := udpRcvbufErrors()
	cpu0, load0, t0 := benchout.ProcessCPU(r.cmd.Process.Pid), benchout.ProcessCPU(self), time.Now()
	stop := time.Now().Add(d)
	var wg sync.WaitGroup
	payload := make([]byte, 200)
	for _, a := range allocs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if dir == "to_client" {
				blast(a.peer, a.a.relay, payload, stop)
				return
			}
			framed := make([]byte, 4+len(payload))
			framed[0], framed[1] = byte(a.a.channel>>8), byte(a.a.channel)
			framed[2], framed[3] = byte(len(payload)>>8), byte(len(payload))
			blast(a.a.conn, a.a.server, framed, stop)
		}()
	}
	wg.Wait()
	time.Sleep(100 * time.Millisecond)
	elapsed := time.Since(t0)
	delivered := got.Load()
	serverCPU := (benchout.ProcessCPU(r.cmd.Process.Pid) - cpu0).Seconds()
	loadCPU := (benchout.ProcessCPU(self) - load0).Seconds()
	drops := udpRcvbufErrors() - drops0
	for _, a := range allocs {
		_ = a.a.conn.SetReadDeadline(time.Now()) // ends its drain, not the socket
		_ = a.peer.SetReadDeadline(time.Now())
	}
	drained.Wait()
	for _, a := range allocs {
		a.a.close()
		a.peer.Close()
	}
	res := relayResult{
		pps:       float64(delivered) / d.Seconds(),
		serverCPU: serverCPU / elapsed.Seconds() * 100,
		loadCPU:   loadCPU / elapsed.Seconds() * 100,
		drops:     float64(drops) / d.Seconds(),
	}
	if delivered > 0 {
		res.usPerDgm = serverCPU / float64(delivered) * 1e6
	}
	b.Logf("%s %s n=%d: %.0f/s delivered, %.0f/s dropped on full receive buffers, server %.0f%% CPU, load %.0f%%",
		r.name, dir, n, res.pps, res.drops, res.serverCPU, res.loadCPU)
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
	pinLoad(b)
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
					var srv, drops []float64
					for _, r := range res[name] {
						srv, drops = append(srv, r.serverCPU), append(drops, r.drops)
					}
					benchout.Record(fmt.Sprintf("turn-%s-cpu/%s/%d", name, dir, n), "%", srv)
					benchout.Record(fmt.Sprintf("turn-%s-drops/%s/%d", name, dir, n), "pkt/s", drops)
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

// udpRcvbufErrors is the kernel's count of UDP datagrams dropped because a
// socket's receive buffer was full (all sockets).
func udpRcvbufErrors() int64 {
	b, err := os.ReadFile("/proc/net/snmp")
	if err != nil {
		return 0
	}
	var head []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] != "Udp:" {
			continue
		}
		if head == nil {
			head = f
			continue
		}
		for i, h := range head {
			if h == "RcvbufErrors" && i < len(f) {
				v, _ := strconv.ParseInt(f[i], 10, 64)
				return v
			}
		}
	}
	return 0
}

// pinLoad keeps this process (the load generator and the receivers) off the
// core the servers run on, until the benchmark ends.
func pinLoad(b *testing.B) {
	cpus := runtime.NumCPU()
	if cpus < 2 {
		return
	}
	var set, all unix.CPUSet
	for i := range cpus {
		all.Set(i)
		if i < cpus-1 {
			set.Set(i)
		}
	}
	each := func(s *unix.CPUSet) {
		tasks, _ := os.ReadDir("/proc/self/task")
		for _, t := range tasks {
			if tid, err := strconv.Atoi(t.Name()); err == nil {
				_ = unix.SchedSetaffinity(tid, s)
			}
		}
	}
	each(&set)
	b.Cleanup(func() { each(&all) })
}
