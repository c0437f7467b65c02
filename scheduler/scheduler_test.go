package scheduler

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	nomad "github.com/hashicorp/nomad/api"

	"github.com/metal-stream/metal/internal/localcluster"
	"github.com/metal-stream/metal/internal/localcluster/clustertest"
	"github.com/metal-stream/metal/internal/syncbuf"
	"github.com/metal-stream/metal/jobs"
)

func TestMain(m *testing.M) {
	if flag := os.Getenv("METAL_TEST_HEALTHZ"); flag != "" {
		serveHealthz(os.Args[1], flag) // the test binary as a fake streamer
		return
	}
	clustertest.Main(m, clustertest.Options{VerifyLeaks: true})
}

// fakeStreamer writes a script the streamer job runs instead of metal: the
// real job file, the real Nomad and Consul, a process whose fate the test
// chooses (run, exit 0, exit 3).
func fakeStreamer(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "streamer.sh")
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func newScheduler(t *testing.T, mutate func(*Config)) (*Scheduler, func()) {
	t.Helper()
	c := clustertest.Cluster(t)
	hcl, _ := jobs.Read("streamer.nomad.hcl")
	cfg := DefaultConfig()
	cfg.JobHCL = hcl
	cfg.MasterKey = []byte("scheduler-test-key-0123456789abcdef")
	cfg.KVPrefix = "metal-test/" + t.Name() + "/"
	cfg.JobVars = map[string]any{"driver": "raw_exec", "gpu": false, "metal_binary": fakeStreamer(t, "exec sleep 300")}
	mutate(&cfg)
	t.Cleanup(func() {
		for _, j := range mustJobs(t) {
			_, _, _ = c.Nomad.Jobs().Deregister(j, true, nil)
		}
		_, _ = c.Consul.KV().DeleteTree("metal-test/", nil)
		// A purged job's allocations hold their CPU until their tasks
		// stop: the next test's placement would find the node exhausted.
		if err := localcluster.WaitNoRunningAllocs(context.Background(), c.Nomad); err != nil {
			t.Errorf("allocations still live after the test: %v", err)
		}
	})
	s, stop := startScheduler(t, cfg, c.Nomad)
	for !s.Ready() || !s.Leading() {
		time.Sleep(10 * time.Millisecond)
	}
	return s, stop
}

// startScheduler runs a scheduler on cfg and Nomad client nc until stop is
// called (as a SIGTERM would end it) or the test ends.
func startScheduler(t *testing.T, cfg Config, nc *nomad.Client) (*Scheduler, func()) {
	t.Helper()
	logs := &syncbuf.Buffer{}
	s, err := New(cfg, nc, clustertest.Cluster(t).Consul, slog.New(slog.NewTextHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("scheduler log:\n%s", logs.String())
		}
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = s.Run(ctx); close(done) }()
	var once sync.Once
	stop := func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	return s, stop
}

func mustJobs(t *testing.T) []string {
	jobs, _, err := clustertest.Cluster(t).Nomad.Jobs().List(nil)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, j := range jobs {
		ids = append(ids, j.ID)
	}
	return ids
}

// waitState waits for a session to reach want, through Changed.
func waitState(t *testing.T, s *Scheduler, id string, want State) Status {
	t.Helper()
	timeout := time.After(60 * time.Second)
	for {
		ch := s.Changed()
		st, err := s.Get(id)
		if err != nil {
			t.Fatal(err)
		}
		if st.State == want {
			return st
		}
		select {
		case <-ch:
		case <-timeout:
			t.Fatalf("session %s: state %s (%s), want %s", id, st.State, st.Reason, want)
		}
	}
}

func TestQueueOrderBoundsAndPromotion(t *testing.T) {
	s, _ := newScheduler(t, func(c *Config) { c.Capacity, c.QueueBound = 1, 2 })
	ctx := context.Background()
	a, created, err := s.Enqueue(ctx, "a", Prefs{})
	if err != nil || !created || a.State == StateQueued {
		t.Fatalf("first = %+v %v %v, want placed", a, created, err)
	}
	b, _, _ := s.Enqueue(ctx, "b", Prefs{})
	c, _, _ := s.Enqueue(ctx, "c", Prefs{})
	if b.State != StateQueued || b.Position != 1 || c.Position != 2 {
		t.Fatalf("b %+v c %+v, want queued at 1 and 2", b, c)
	}
	if _, _, err := s.Enqueue(ctx, "d", Prefs{}); !errors.Is(err, ErrQueueFull) {
		t.Fatalf("fourth = %v, want ErrQueueFull", err)
	}
	again, created, _ := s.Enqueue(ctx, "b", Prefs{})
	if created || again.ID != b.ID {
		t.Fatalf("player b again = %+v created=%v, want its session", again, created)
	}
	waitState(t, s, a.ID, StateStarting)
	if jobs := mustJobs(t); len(jobs) != 1 || jobs[0] != s.JobID(a.ID) {
		t.Fatalf("jobs %v, want only a's", jobs)
	}
	if err := s.Stop(ctx, a.ID, ReasonStopped); err != nil {
		t.Fatal(err)
	}
	waitState(t, s, b.ID, StateStarting)
	if st, _ := s.Get(c.ID); st.State != StateQueued || st.Position != 1 {
		t.Fatalf("c after promotion %+v, want queued at 1", st)
	}
	if st, _ := s.Get(a.ID); st.State != StateEnded || st.Reason != ReasonStopped {
		t.Fatalf("a %+v, want ended: stopped", st)
	}
}

func TestStreamerFateBecomesState(t *testing.T) {
	tests := []struct {
		name, script string
		want         State
		reason       string
	}{
		{"crash", "exit 3", StateFailed, "streamer crashed (exit code 3)"},
		{"idle exit", "exit 0", StateEnded, ReasonStreamerExited},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, _ := newScheduler(t, func(c *Config) {
				c.JobVars["metal_binary"] = fakeStreamer(t, tt.script)
				c.Failover = "click" // the fate itself; replacement: TestCrashedStreamerIsReplaced
			})
			st, _, err := s.Enqueue(context.Background(), "p", Prefs{})
			if err != nil {
				t.Fatal(err)
			}
			got := waitState(t, s, st.ID, tt.want)
			if got.Reason != tt.reason {
				t.Fatalf("reason %q, want %q", got.Reason, tt.reason)
			}
			deadline := time.Now().Add(10 * time.Second)
			for len(mustJobs(t)) != 0 {
				if time.Now().After(deadline) {
					t.Fatalf("job of an ended session not purged: %v", mustJobs(t))
				}
				time.Sleep(50 * time.Millisecond)
			}
		})
	}
}

func TestRestartKeepsSessions(t *testing.T) {
	var cfg Config
	s, stop := newScheduler(t, func(c *Config) { c.Capacity, c.QueueBound = 1, 1; cfg = *c })
	a, _, _ := s.Enqueue(context.Background(), "a", Prefs{})
	b, _, _ := s.Enqueue(context.Background(), "b", Prefs{})
	waitState(t, s, a.ID, StateStarting)
	stop()

	c := clustertest.Cluster(t)
	s2, err := New(cfg, c.Nomad, c.Consul, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = s2.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	for !s2.Ready() {
		time.Sleep(10 * time.Millisecond)
	}
	waitState(t, s2, a.ID, StateStarting)
	if st, _ := s2.Get(b.ID); st.State != StateQueued || st.Position != 1 {
		t.Fatalf("b after restart %+v, want queued at 1", st)
	}
	if jobs := mustJobs(t); len(jobs) != 1 {
		t.Fatalf("jobs after restart %v, want a's only (no double placement)", jobs)
	}
}

func TestReaperStopsUnwatchedSessions(t *testing.T) {
	s, _ := newScheduler(t, func(c *Config) { c.ReapAfter = 2 * time.Second })
	watched, _, _ := s.Enqueue(context.Background(), "watched", Prefs{})
	s2, _, _ := s.Enqueue(context.Background(), "forgotten", Prefs{})
	release := s.Watch(watched.ID)
	st := waitState(t, s, s2.ID, StateEnded)
	if st.Reason != ReasonIdle {
		t.Fatalf("reason %q", st.Reason)
	}
	if st, _ := s.Get(watched.ID); st.State.Terminal() {
		t.Fatalf("watched session reaped: %+v", st)
	}
	release()
	waitState(t, s, watched.ID, StateEnded)
}

func TestNewRejectsBadConfig(t *testing.T) {
	c := clustertest.Cluster(t)
	for _, cfg := range []Config{
		{Capacity: -1, JobHCL: "x", MasterKey: make([]byte, 32)},
		{JobHCL: "", MasterKey: make([]byte, 32)},
		{JobHCL: "x", MasterKey: []byte("short")},
	} {
		if _, err := New(cfg, c.Nomad, c.Consul, nil); err == nil {
			t.Errorf("New(%+v) accepted", cfg)
		}
	}
}

// TestSweepRemovesOrphansBothWays: a session job (and its key) registered
// behind the scheduler's back is purged by the sweep, while a job whose
// placed record is in KV (another gateway's) is left alone; a placed
// session whose job is missing past the grace fails with ReasonJobGone
// (within it, it is left alone: a placement in flight).
func TestSweepRemovesOrphansBothWays(t *testing.T) {
	s, _ := newScheduler(t, func(c *Config) { c.SweepEvery = 0 }) // the test drives the passes
	c := clustertest.Cluster(t)
	ctx := context.Background()

	stray := "0123456789abcdef0123456789abcdef"
	registerBehindTheBack(t, s, stray)
	if _, _, err := c.Nomad.Variables().Create(&nomad.Variable{Path: "nomad/jobs/" + s.JobID(stray), Items: nomad.VariableItems{"token_key": "x"}}, nil); err != nil {
		t.Fatal(err)
	}
	// Another gateway's session, placed: its job is not an orphan.
	theirs := "fedcba9876543210fedcba9876543210"
	if err := s.store.create(ctx, &record{ID: theirs, Player: "other", Placed: true, Datacenter: "dc1"}, claim{}, nil, 0); err != nil {
		t.Fatal(err)
	}
	job2, _ := s.jobFor(ctx, &record{ID: theirs, Player: "other", Datacenter: "dc1"})
	if _, _, err := c.Nomad.Jobs().Register(job2, nil); err != nil {
		t.Fatal(err)
	}
	lost := "00112233445566778899aabbccddeeff"
	s.mu.Lock()
	s.records[lost] = &record{ID: lost, Player: "p", Placed: true, Datacenter: "dc1"}
	s.mu.Unlock()

	now := time.Now()
	if err := s.sweep(ctx, now); err != nil {
		t.Fatal(err)
	}
	if jobs := mustJobs(t); slices.Contains(jobs, s.JobID(stray)) {
		t.Fatalf("stray job survived the sweep: %v", jobs)
	}
	if _, _, err := c.Nomad.Variables().Read("nomad/jobs/"+s.JobID(stray), nil); err == nil {
		t.Fatal("stray key survived the sweep")
	}
	if jobs := mustJobs(t); !slices.Contains(jobs, s.JobID(theirs)) {
		t.Fatalf("the sweep purged another gateway's session job: %v", jobs)
	}
	if got, _ := s.Get(lost); got.State.Terminal() {
		t.Fatalf("session ended within the grace: %+v", got)
	}
	if err := s.sweep(ctx, now.Add(s.sweepGrace()+time.Second)); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Get(lost); got.State != StateFailed || got.Reason != ReasonJobGone {
		t.Fatalf("session without its job past the grace: %+v, want failed: %s", got, ReasonJobGone)
	}
}

// registerBehindTheBack registers session id's job in Nomad with no record
// in any gateway's store, as an operator or a lost record would leave it.
func registerBehindTheBack(t *testing.T, s *Scheduler, id string) {
	t.Helper()
	job, err := s.jobFor(context.Background(), &record{ID: id, Player: "nobody", Datacenter: "dc1"})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := clustertest.Cluster(t).Nomad.Jobs().Register(job, nil); err != nil {
		t.Fatal(err)
	}
}
