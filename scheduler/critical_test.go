package scheduler

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/metal-stream/metal/internal/localcluster/clustertest"
)

// serveHealthz is a fake streamer's /healthz on addr: healthy to everyone
// until the file sick exists, then critical to Consul's check (its
// User-Agent says "Consul Health Check") and still healthy to the
// gateway's own probe, so only the Consul signal can end the session.
func serveHealthz(addr, sick string) {
	_ = http.ListenAndServe(addr, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := os.Stat(sick); err == nil && strings.Contains(r.UserAgent(), "Consul") {
			http.Error(w, "sick", http.StatusInternalServerError)
			return
		}
		fmt.Fprint(w, `{"encoder":"x264enc","peers":1}`)
	}))
}

// TestCriticalCheckFailsOver: a live session's Consul check goes critical
// while the gateway's probe still reaches the streamer: the leader fails the
// session over from the Consul signal, within 5 s of the check going
// critical, not after the probe's misses (there are none) or a sweep.
func TestCriticalCheckFailsOver(t *testing.T) {
	sick := filepath.Join(t.TempDir(), "sick")
	s, _ := newScheduler(t, func(c *Config) {
		c.Failover = "click" // the session fails, naming why; no replacement to clean up
		c.JobVars["metal_binary"] = fakeStreamer(t, fmt.Sprintf(`METAL_TEST_HEALTHZ=%s exec %s "$5"`, sick, os.Args[0]))
	})
	st, _, err := s.Enqueue(context.Background(), "p", Prefs{})
	if err != nil {
		t.Fatal(err)
	}
	waitState(t, s, st.ID, StateConnected) // the check passed, the probe read peers=1
	if err := os.WriteFile(sick, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	at := time.Now()
	// When Consul first reports the check critical, seen from its health
	// endpoint every 50 ms: the 5 s the issue allows start there.
	critical := make(chan time.Time, 1)
	watchCtx, stopWatch := context.WithCancel(context.Background())
	defer stopWatch()
	health := clustertest.Cluster(t).Consul.Health()
	go func() {
		for watchCtx.Err() == nil {
			entries, _, err := health.Service("metal-streamer", "session-"+st.ID, false, nil)
			if err == nil && len(entries) > 0 && entries[0].Checks.AggregatedStatus() == "critical" {
				critical <- time.Now()
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	got := waitState(t, s, st.ID, StateFailed)
	took := time.Since(at)
	t.Logf("failed over %v after the check was made to fail (it runs every 2 s)", took.Round(time.Millisecond))
	if got.Reason != ReasonUnhealthy {
		t.Fatalf("reason %q, want %q", got.Reason, ReasonUnhealthy)
	}
	select {
	case c := <-critical:
		if since := time.Since(c); since > 5*time.Second {
			t.Fatalf("failed over %v after Consul reported the check critical, want within 5 s", since)
		} else {
			t.Logf("failed over %v after Consul reported the check critical", since.Round(time.Millisecond))
		}
	case <-time.After(2 * time.Second):
		t.Fatal("the session failed over, but Consul never reported its check critical")
	}
	// The check fails at its next run (2 s interval), then criticalGrace.
	if took > 2*time.Second+criticalGrace+2*time.Second {
		t.Fatalf("failed over %v after the check started failing", took)
	}
}

// TestStartingCheckIsNotAFailure: a streamer whose check has never passed
// (Consul registers checks critical) is starting, not failed over.
func TestStartingCheckIsNotAFailure(t *testing.T) {
	s, _ := newScheduler(t, func(c *Config) { c.Failover = "click" })
	st, _, err := s.Enqueue(context.Background(), "p", Prefs{})
	if err != nil {
		t.Fatal(err)
	}
	waitState(t, s, st.ID, StateStarting) // exec sleep 300: no /healthz, check critical from the start
	time.Sleep(criticalGrace + 3*time.Second)
	if got, _ := s.Get(st.ID); got.State != StateStarting {
		t.Fatalf("a streamer that never passed its check: state %s (%s), want starting", got.State, got.Reason)
	}
}

// TestStopWhenTheJobIsGone: stopping a session whose job someone already
// purged succeeds, and the purge is seen as done: the slot frees. (Nomad
// 1.6.1 answers a second purge of a job just purged without an error, as
// logged; a purge racing a deregistration in progress answers 500 "job not
// found", which isNotFound takes as gone.)
func TestStopWhenTheJobIsGone(t *testing.T) {
	s, _ := newScheduler(t, func(c *Config) { c.Capacity, c.QueueBound = 1, 5 })
	ctx := context.Background()
	st, _, err := s.Enqueue(ctx, "p", Prefs{})
	if err != nil {
		t.Fatal(err)
	}
	waitState(t, s, st.ID, StateStarting)
	nc := clustertest.Cluster(t).Nomad
	if _, _, err := nc.Jobs().Deregister(s.JobID(st.ID), true, nil); err != nil {
		t.Fatal(err)
	}
	_, _, err = nc.Jobs().Deregister(s.JobID(st.ID), true, nil)
	t.Logf("Nomad on purging a missing job: %v", err)
	if err := s.purgeJob(ctx, st.ID); err != nil {
		t.Fatalf("purging a job already gone: %v", err)
	}
	if err := s.Stop(ctx, st.ID, ReasonStopped); err != nil {
		t.Fatalf("stopping a session whose job is gone: %v", err)
	}
	next, _, err := s.Enqueue(ctx, "q", Prefs{})
	if err != nil {
		t.Fatal(err)
	}
	waitState(t, s, next.ID, StateStarting) // the slot is free again
}
