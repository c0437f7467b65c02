package scheduler

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	consul "github.com/hashicorp/consul/api"
	nomad "github.com/hashicorp/nomad/api"

	"github.com/metal-stream/metal/internal/localcluster"
	"github.com/metal-stream/metal/internal/localcluster/clustertest"
	"github.com/metal-stream/metal/jobs"
)

// cutter forwards TCP to the real Nomad and can cut the line: every
// connection closed and new ones refused, as when Nomad's servers are
// away, until it is restored.
type cutter struct {
	target string
	mu     sync.Mutex
	ln     net.Listener
	addr   string
	conns  map[net.Conn]bool
}

func newCutter(t *testing.T, target string) *cutter {
	c := &cutter{target: target, conns: map[net.Conn]bool{}}
	c.listen(t, "127.0.0.1:0")
	t.Cleanup(c.cut)
	return c
}

func (c *cutter) listen(t *testing.T, addr string) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c.mu.Lock()
	c.ln, c.addr = ln, ln.Addr().String()
	c.mu.Unlock()
	go func() {
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			out, err := net.Dial("tcp", c.target)
			if err != nil {
				in.Close()
				continue
			}
			c.mu.Lock()
			c.conns[in], c.conns[out] = true, true
			c.mu.Unlock()
			go func() { _, _ = io.Copy(out, in); out.Close() }()
			go func() { _, _ = io.Copy(in, out); in.Close() }()
		}
	}()
}

func (c *cutter) cut() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ln != nil {
		c.ln.Close()
		c.ln = nil
	}
	for conn := range c.conns {
		conn.Close()
	}
	c.conns = map[net.Conn]bool{}
}

// TestNomadOutageQueuesNotFails: while Nomad does not answer, a session
// waiting for a slot is not failed (its placement waits and retries),
// and a new admission is refused with ErrUnavailable instead of creating a
// session that would fail; when Nomad is back, the waiting session is
// placed and admissions work again.
func TestNomadOutageQueuesNotFails(t *testing.T) {
	c := clustertest.Cluster(t)
	line := newCutter(t, strings.TrimPrefix(c.NomadAddr, "http://"))
	ncfg := nomad.DefaultConfig()
	ncfg.Address = "http://" + line.addr
	nc, err := nomad.NewClient(ncfg)
	if err != nil {
		t.Fatal(err)
	}
	hcl, _ := jobs.Read("streamer.nomad.hcl")
	cfg := DefaultConfig()
	cfg.JobHCL, cfg.MasterKey = hcl, []byte("scheduler-test-key-0123456789abcdef")
	cfg.KVPrefix = "metal-test/" + t.Name() + "/"
	cfg.Capacity, cfg.QueueBound = 1, 5
	cfg.JobVars = map[string]any{"driver": "raw_exec", "gpu": false, "metal_binary": fakeStreamer(t, "exec sleep 300")}
	t.Cleanup(func() {
		for _, j := range mustJobs(t) {
			_, _, _ = c.Nomad.Jobs().Deregister(j, true, nil)
		}
		_, _ = c.Consul.KV().DeleteTree("metal-test/", nil)
		if err := localcluster.WaitNoRunningAllocs(context.Background(), c.Nomad); err != nil {
			t.Errorf("allocations still live after the test: %v", err)
		}
	})
	s, _ := startScheduler(t, cfg, nc)
	ctx := context.Background()
	waitFor(t, "ready and leading", 20*time.Second, func() bool { return s.Ready() && s.Leading() })

	a, _, err := s.Enqueue(ctx, "a", Prefs{})
	if err != nil {
		t.Fatal(err)
	}
	waitState(t, s, a.ID, StateStarting)
	b, _, err := s.Enqueue(ctx, "b", Prefs{})
	if err != nil || b.State != StateQueued {
		t.Fatalf("b = %+v %v, want queued", b, err)
	}

	line.cut() // Nomad is away
	waitFor(t, "admissions refused as unavailable", 20*time.Second, func() bool {
		_, _, err := s.Enqueue(ctx, "c", Prefs{})
		return errors.Is(err, ErrUnavailable)
	})
	// a leaves during the outage: its purge cannot reach Nomad (it is
	// retried until it does). The leader tries b, as placeLoop would, and
	// meets the outage: b goes back to the queue, it does not fail.
	_ = s.Stop(ctx, a.ID, ReasonStopped)
	s.mu.Lock()
	s.records[b.ID].Placed, s.records[b.ID].Datacenter = true, "dc1"
	s.mu.Unlock()
	err = s.place(ctx, b.ID, true)
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("placing during the outage: %v, want ErrUnavailable", err)
	}
	s.placeFailed(ctx, b.ID, err)
	time.Sleep(time.Second)
	if st, _ := s.Get(b.ID); st.State != StateQueued {
		t.Fatalf("b during the outage: %+v, want queued", st)
	}

	line.listen(t, line.addr) // Nomad is back, same address
	waitState(t, s, b.ID, StateStarting)
	waitFor(t, "admissions again", 20*time.Second, func() bool {
		st, _, err := s.Enqueue(ctx, "c", Prefs{})
		return err == nil && st.State == StateQueued
	})
}

// TestGetDuringConsulOutage: a session this gateway has not seen yet is
// read from Consul; while Consul does not answer (a leader election), that
// is an outage the caller retries (ErrUnavailable, a 503), never "no such
// session", which would end a player's page at a gateway that is merely
// behind.
func TestGetDuringConsulOutage(t *testing.T) {
	c := clustertest.Cluster(t)
	line := newCutter(t, strings.TrimPrefix(c.ConsulAddr, "http://"))
	ccfg := consul.DefaultConfig()
	ccfg.Address = line.addr
	cc, err := consul.NewClient(ccfg)
	if err != nil {
		t.Fatal(err)
	}
	hcl, _ := jobs.Read("streamer.nomad.hcl")
	cfg := DefaultConfig()
	cfg.JobHCL, cfg.MasterKey = hcl, []byte("scheduler-test-key-0123456789abcdef")
	cfg.KVPrefix = "metal-test/" + t.Name() + "/"
	s, err := New(cfg, c.Nomad, cc, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	const unseen = "0123456789abcdef0123456789abcdef"
	if _, err := s.Get(unseen); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get of an unknown id with Consul up: %v, want ErrNotFound", err)
	}
	line.cut()
	if _, err := s.Get(unseen); !errors.Is(err, ErrUnavailable) || errors.Is(err, ErrNotFound) {
		t.Fatalf("Get with Consul away: %v, want ErrUnavailable", err)
	}
}
